//go:build integration

package app

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestContentIgnoresRewrittenContentType: the document's content_type is
// writable by anyone who can write to the index (the :9201 listener when it
// may write the gateway's index, or Elasticsearch itself). Rewritten to
// text/html, it must not turn the original into a page on the gateway's
// origin: the content route serves the type sniffed from the bytes.
func TestContentIgnoresRewrittenContentType(t *testing.T) {
	s := startGateway(t, nil)
	img := distinctJPEG(t, 4242)
	code, body := postRaw(t, s.url+"/v1/images?id=xss-probe", "image/jpeg", img)
	if code != http.StatusCreated {
		t.Fatalf("ingest: %d %s", code, body)
	}
	req, _ := http.NewRequest("POST", esURL+"/"+s.alias+"/_update/xss-probe?refresh=true",
		strings.NewReader(`{"doc":{"content_type":"text/html"}}`))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("rewrite through Elasticsearch: %d %s", res.StatusCode, b)
	}
	// The rewrite took: the metadata route reports what the document says.
	var meta struct {
		ContentType string `json:"content_type"`
	}
	if code := getJSON(t, s.url+"/v1/images/xss-probe", &meta); code != http.StatusOK || meta.ContentType != "text/html" {
		t.Fatalf("document after the rewrite: %d %q", code, meta.ContentType)
	}

	res, err = http.Get(s.url + "/v1/images/xss-probe/content")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || string(got) != string(img) {
		t.Fatalf("content: %d, %d bytes (want %d)", res.StatusCode, len(got), len(img))
	}
	for k, want := range map[string]string{
		"Content-Type":            "image/jpeg",
		"Content-Disposition":     `inline; filename="xss-probe.jpg"`,
		"X-Content-Type-Options":  "nosniff",
		"Content-Security-Policy": "default-src 'none'; sandbox",
	} {
		if v := res.Header.Get(k); v != want {
			t.Errorf("%s: %q, want %q", k, v, want)
		}
	}
}

// TestPathIDsNeverReachAnotherEndpoint: ids with '#', '?', '/' or dot
// segments are refused as JSON errors by the real gateway and leave the
// index alone (without validation and escaping, "a%23b" would read and
// delete document "a", and "a%3Fb" would add query parameters).
func TestPathIDsNeverReachAnotherEndpoint(t *testing.T) {
	s := startGateway(t, nil)
	if code, body := postRaw(t, s.url+"/v1/images?id=a", "image/jpeg", distinctJPEG(t, 4343)); code != http.StatusCreated {
		t.Fatalf("ingest: %d %s", code, body)
	}
	for _, tc := range []struct{ method, path string }{
		{"GET", "/v1/images/a%23b"}, {"GET", "/v1/images/a%3Fb"}, {"GET", "/v1/images/a%3Fpretty"},
		{"GET", "/v1/images/..%2F_search"}, {"GET", "/v1/images/%2E%2E"}, {"GET", "/v1/images/a%23b/content"},
		{"GET", "/v1/images/a%23b/similar"}, {"GET", "/v1/images/a%3Fb/thumbnail"},
		{"DELETE", "/v1/images/a%23b"}, {"DELETE", "/v1/images/a%3Frefresh=true"}, {"DELETE", "/v1/images/..%2F" + s.alias},
	} {
		req, _ := http.NewRequest(tc.method, s.url+tc.path, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Error struct{ Code string } `json:"error"`
		}
		err = json.NewDecoder(res.Body).Decode(&out)
		res.Body.Close()
		if err != nil || (res.StatusCode != http.StatusBadRequest && res.StatusCode != http.StatusNotFound) || out.Error.Code == "" {
			t.Errorf("%s %s: %d %+v %v, want a 400/404 JSON error", tc.method, tc.path, res.StatusCode, out, err)
		}
	}
	var img struct{ ID string }
	if code := getJSON(t, s.url+"/v1/images/a", &img); code != http.StatusOK || img.ID != "a" {
		t.Fatalf("document a after the probes: %d %+v", code, img)
	}
	if n := esCount(t, s.alias); n != 1 {
		t.Fatalf("%d documents behind the alias, want 1", n)
	}
}
