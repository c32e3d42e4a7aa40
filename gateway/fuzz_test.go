package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tusou/tusou/config"
)

// Fuzz targets for what a client controls byte by byte: multipart bodies,
// ids and metadata. `go test` runs the seeds in testdata/fuzz/<name>/;
// `make fuzz` explores from them. The bodies go through the whole router
// (limits, arena, handlers) into the fake service.

// fuzzBoundary is the multipart boundary of every fuzzed body: the fuzzer
// mutates the body, where the parser's edge cases are.
const fuzzBoundary = "fuzzfuzzfuzz"

// fuzzLimits are small so the fuzzer reaches every limit quickly.
func fuzzLimits(c *config.Config) {
	c.Server.MaxFiles = 3
	c.Server.MaxMetadataBytes = 128
	c.Server.MaxBodyBytes = 64 << 10
	c.Preprocess.MaxBytes = 4 << 10
}

// checkAnswer asserts what every answer must be: never a 5xx, always JSON,
// an error object with a code on every refusal.
func checkAnswer(t *testing.T, what string, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("%s: %d %s", what, rec.Code, rec.Body)
	}
	var out struct {
		Error *struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s: %d, not JSON: %v: %q", what, rec.Code, err, rec.Body)
	}
	if rec.Code >= 400 && (out.Error == nil || out.Error.Code == "" || out.Error.Message == "") {
		t.Fatalf("%s: %d without an error code and message: %s", what, rec.Code, rec.Body)
	}
}

// FuzzMultipart: any multipart body, sent to ingest and to search by
// image, gets a 2xx or a 4xx JSON answer, and what reaches the service is
// within every limit: files, bytes per file, valid ids, metadata objects.
func FuzzMultipart(f *testing.F) {
	h, svc := fuzzServer(fuzzLimits)
	cfg := config.Default()
	fuzzLimits(cfg)
	f.Fuzz(func(t *testing.T, body []byte) {
		svc.mu.Lock()
		svc.uploads, svc.queries = nil, nil
		svc.mu.Unlock()
		for _, path := range []string{"/v1/images", "/v1/search/image"} {
			req := httptest.NewRequest("POST", path, bytes.NewReader(body))
			req.Header.Set("Content-Type", "multipart/form-data; boundary="+fuzzBoundary)
			checkAnswer(t, path, do(h, req))
		}
		svc.mu.Lock()
		defer svc.mu.Unlock()
		if len(svc.uploads) > cfg.Server.MaxFiles {
			t.Fatalf("%d files reached the service", len(svc.uploads))
		}
		for _, u := range svc.uploads {
			if int64(len(u.Data)) > cfg.Preprocess.MaxBytes {
				t.Fatalf("a %d-byte file reached the service", len(u.Data))
			}
			if u.ID != "" && checkID(u.ID) != nil {
				t.Fatalf("invalid id %q reached the service", u.ID)
			}
			if u.Metadata != nil {
				if _, err := json.Marshal(u.Metadata); err != nil {
					t.Fatalf("metadata %v: %v", u.Metadata, err)
				}
			}
		}
	})
}

// FuzzRawUpload: a raw image body's id and metadata come from the query
// string; any query gets a 2xx or a 4xx JSON answer, and only valid ids
// and metadata objects reach the service.
func FuzzRawUpload(f *testing.F) {
	h, svc := fuzzServer(fuzzLimits)
	f.Fuzz(func(t *testing.T, rawQuery string, body []byte) {
		svc.mu.Lock()
		svc.uploads = nil
		svc.mu.Unlock()
		req := httptest.NewRequest("POST", "/v1/images", bytes.NewReader(body))
		req.URL.RawQuery = rawQuery
		req.Header.Set("Content-Type", "image/jpeg")
		checkAnswer(t, "raw upload", do(h, req))
		svc.mu.Lock()
		defer svc.mu.Unlock()
		for _, u := range svc.uploads {
			if u.ID != "" && checkID(u.ID) != nil {
				t.Fatalf("invalid id %q reached the service", u.ID)
			}
		}
	})
}

// FuzzMetadata: parsing a request's and a file's metadata and merging them
// accepts exactly JSON objects, and a merged object stays within the limit.
func FuzzMetadata(f *testing.F) {
	const limit = 256
	f.Fuzz(func(t *testing.T, shared, own []byte) {
		s, errS := parseMetadata(shared)
		o, errO := parseMetadata(own)
		for _, r := range []struct {
			raw []byte
			md  map[string]any
			err error
		}{{shared, s, errS}, {own, o, errO}} {
			var v any
			isObject := json.Unmarshal(r.raw, &v) == nil && v != nil
			if _, ok := v.(map[string]any); !ok {
				isObject = false
			}
			if r.err == nil && (r.md == nil || !isObject) {
				t.Fatalf("accepted %q as metadata: %v", r.raw, r.md)
			}
			if r.err != nil && codeOf(r.err) != "invalid_metadata" {
				t.Fatalf("refused %q with %v", r.raw, r.err)
			}
		}
		if errS != nil || errO != nil {
			return
		}
		m, err := mergeMetadata(s, o, limit)
		if err != nil {
			return
		}
		for k, v := range o {
			if b1, _ := json.Marshal(m[k]); !bytes.Equal(b1, mustJSON(t, v)) {
				t.Fatalf("key %q: merged %s, the file's own %s", k, b1, mustJSON(t, v))
			}
		}
		if s != nil && o != nil {
			if b := mustJSON(t, m); len(b) > limit {
				t.Fatalf("merged metadata is %d bytes, limit %d", len(b), limit)
			}
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func codeOf(err error) string { return publicError(err).Code }

// fuzzServer is newTestServer for a fuzz target: one router for all inputs.
func fuzzServer(mutate func(*config.Config)) (http.Handler, *fakeService) {
	cfg := config.Default()
	if mutate != nil {
		mutate(cfg)
	}
	reg := prometheus.NewRegistry()
	svc := &fakeService{}
	return New(Deps{Config: cfg, Service: svc, Logger: zap.NewNop(), Registry: reg, Gatherer: reg}), svc
}

// FuzzPathID: any path under /v1/images/ gets a JSON answer, and the
// service only ever sees ids that ingest would accept.
func FuzzPathID(f *testing.F) {
	h, svc := fuzzServer(nil)
	f.Fuzz(func(t *testing.T, path string) {
		svc.mu.Lock()
		svc.similarIDs = nil
		svc.mu.Unlock()
		req, err := http.NewRequest("GET", "http://gw.local/v1/images/"+path+"/similar", nil)
		if err != nil {
			return // not a URL a client could send
		}
		rec := do(h, req)
		if rec.Code == http.StatusMovedPermanently || rec.Code == http.StatusTemporaryRedirect {
			// Gin's trailing-slash redirect ("/v1/images//similar"): it
			// must stay on this host.
			if loc, err := url.Parse(rec.Header().Get("Location")); err != nil || (loc.Host != "" && loc.Host != "gw.local") {
				t.Fatalf("%s redirects to %q", req.URL.Path, rec.Header().Get("Location"))
			}
		} else {
			checkAnswer(t, req.URL.Path, rec)
		}
		svc.mu.Lock()
		defer svc.mu.Unlock()
		for _, id := range svc.similarIDs {
			if checkID(id) != nil {
				t.Fatalf("invalid id %q reached the service", id)
			}
		}
	})
}
