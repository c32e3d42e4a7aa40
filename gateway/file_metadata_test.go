package gateway

import (
	"bytes"
	"encoding/json"
	"mime/multipart"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tusou/tusou/config"
)

// part is one multipart field, in order: file parts have a file name.
type part struct{ name, filename, value string }

func orderedMultipart(parts ...part) (*bytes.Buffer, string) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for _, p := range parts {
		if p.filename != "" {
			fw, _ := w.CreateFormFile(p.name, p.filename)
			fw.Write([]byte(p.value))
			continue
		}
		w.WriteField(p.name, p.value)
	}
	w.Close()
	return &buf, w.FormDataContentType()
}

func TestFileMetadataAppliesToThePrecedingFile(t *testing.T) {
	h, svc, _ := newTestServer(t, nil)
	body, ct := orderedMultipart(
		part{"file", "a.jpg", "AAA"},
		part{"file_metadata", "", `{"image_name":"a.jpg","album":"own"}`},
		part{"file", "b.jpg", "BBB"},
		part{"metadata", "", `{"album":"run","camera":"x"}`}, // anywhere: every file
		part{"file", "c.jpg", "CCC"},
		part{"file_metadata", "", `{"image_name":"c.jpg"}`},
	)
	req := httptest.NewRequest("POST", "/v1/images", body)
	req.Header.Set("Content-Type", ct)
	if rec := do(h, req); rec.Code != 201 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	ups := svc.uploads
	if len(ups) != 3 {
		t.Fatalf("%d uploads", len(ups))
	}
	a, b, c := ups[0].Metadata, ups[1].Metadata, ups[2].Metadata
	if a["album"] != "own" || a["camera"] != "x" || a["image_name"] != "a.jpg" {
		t.Fatalf("a: file_metadata must win over metadata: %v", a)
	}
	if b["album"] != "run" || b["image_name"] != nil {
		t.Fatalf("b has no file_metadata: %v", b)
	}
	if c["album"] != "run" || c["image_name"] != "c.jpg" {
		t.Fatalf("c: %v", c)
	}
	// The request's metadata object is not changed by a merge.
	if _, leaked := b["image_name"]; leaked {
		t.Fatalf("merge leaked into the shared metadata: %v", b)
	}
}

func TestFileMetadataErrors(t *testing.T) {
	h, svc, _ := newTestServer(t, func(c *config.Config) { c.Server.MaxMetadataBytes = 64 })
	big := `{"k":"` + strings.Repeat("x", 40) + `"}`
	cases := []struct {
		name   string
		parts  []part
		status int
		code   string
		msg    string
	}{
		{"before any file", []part{{"file_metadata", "", `{}`}, {"file", "a.jpg", "A"}}, 400, "invalid_metadata", "right after the file part"},
		{"twice for one file", []part{{"file", "a.jpg", "A"}, {"file_metadata", "", `{}`}, {"file_metadata", "", `{}`}}, 400, "invalid_metadata", "at most once"},
		{"not an object", []part{{"file", "a.jpg", "A"}, {"file_metadata", "", `[1]`}}, 400, "invalid_metadata", `file_metadata of file "a.jpg"`},
		{"too large", []part{{"file", "a.jpg", "A"}, {"file_metadata", "", big + big}}, 413, "metadata_too_large", `file_metadata of file "a.jpg"`},
		{"merged too large", []part{{"metadata", "", big}, {"file", "a.jpg", "A"}, {"file_metadata", "", `{"j":"` + strings.Repeat("y", 40) + `"}`}}, 413, "metadata_too_large", "together"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body, ct := orderedMultipart(tc.parts...)
			req := httptest.NewRequest("POST", "/v1/images", body)
			req.Header.Set("Content-Type", ct)
			rec := do(h, req)
			var eb errorBody
			json.Unmarshal(rec.Body.Bytes(), &eb)
			if got := errorCode(t, rec, tc.status); got != tc.code || !strings.Contains(eb.Error.Message, tc.msg) {
				t.Fatalf("code %q, want %q; body %s", got, tc.code, rec.Body)
			}
		})
	}
	if len(svc.uploads) != 0 {
		t.Fatalf("service called for invalid requests")
	}
}
