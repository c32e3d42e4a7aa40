package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/service"
)

// TestCrossSiteBrowserWritesRefused: a foreign page's form or fetch cannot
// ingest, delete or search (multipart and text/plain need no preflight),
// while the gateway's own page, listed origins and non-browser clients can,
// and reads stay open.
func TestCrossSiteBrowserWritesRefused(t *testing.T) {
	h, svc, _ := newTestServer(t, func(c *config.Config) {
		c.Server.AllowedOrigins = []string{"https://photos.example.com"}
	})
	ingest := func(hdr map[string]string) *http.Request {
		body, ct := multipartBody(t, nil, map[string][]byte{"a.jpg": []byte("img")})
		req := httptest.NewRequest("POST", "http://gw.local:8080/v1/images", body)
		req.Header.Set("Content-Type", ct)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		return req
	}
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		ok   bool
	}{
		{"no browser headers (curl, SDKs)", nil, true},
		{"same-origin page (/ui/)", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://gw.local:8080"}, true},
		{"typed by the user", map[string]string{"Sec-Fetch-Site": "none"}, true},
		{"origin equals host, older browser", map[string]string{"Origin": "http://gw.local:8080"}, true},
		{"allowed origin", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://photos.example.com"}, true},
		{"cross-site page", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, false},
		{"same-site page on another port", map[string]string{"Sec-Fetch-Site": "same-site", "Origin": "http://gw.local:3000"}, false},
		{"foreign origin, older browser", map[string]string{"Origin": "https://evil.example"}, false},
		{"opaque origin (sandboxed page)", map[string]string{"Origin": "null"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(svc.uploads)
			rec := do(h, ingest(tc.hdr))
			if tc.ok {
				if rec.Code != http.StatusCreated || len(svc.uploads) != before+1 {
					t.Fatalf("status %d, uploads %d→%d: %s", rec.Code, before, len(svc.uploads), rec.Body)
				}
				return
			}
			if code := errorCode(t, rec, http.StatusForbidden); code != "cross_origin_refused" {
				t.Fatalf("code %q", code)
			}
			if len(svc.uploads) != before {
				t.Fatal("the refused upload reached the service")
			}
		})
	}

	crossSite := func(method, target, ct, body string) *http.Request {
		req := httptest.NewRequest(method, "http://gw.local:8080"+target, strings.NewReader(body))
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		req.Header.Set("Origin", "https://evil.example")
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		return req
	}
	uploads, refreshes := len(svc.uploads), len(svc.refreshes)
	for _, req := range []*http.Request{
		crossSite("DELETE", "/v1/images/abc", "", ""),
		crossSite("POST", "/v1/search/text", "text/plain", `{"text":"cat"}`),
		crossSite("POST", "/v1/images/_exists", "text/plain", `{"ids":["a"]}`),
		crossSite("POST", "/v1/images?id=x", "application/octet-stream", "img"),
	} {
		if code := errorCode(t, do(h, req), http.StatusForbidden); code != "cross_origin_refused" {
			t.Errorf("%s %s: code %q", req.Method, req.URL.Path, code)
		}
	}
	if len(svc.uploads) != uploads || len(svc.refreshes) != refreshes || len(svc.texts) != 0 || len(svc.existsIDs) != 0 {
		t.Fatalf("a refused request reached the service: uploads %d→%d, texts %v, exists %v",
			uploads, len(svc.uploads), svc.texts, svc.existsIDs)
	}
	// Reads are safe methods: an <img> or a link from another site works.
	if rec := do(h, crossSite("GET", "/v1/images/abc", "", "")); rec.Code != http.StatusOK {
		t.Fatalf("cross-site GET: %d %s", rec.Code, rec.Body)
	}
}

// TestPathIDsValidatedOnEveryRoute: an id that ingest would refuse never
// reaches the service (and so never Elasticsearch's URL) on any route.
func TestPathIDsValidatedOnEveryRoute(t *testing.T) {
	h, svc, _ := newTestServer(t, nil)
	for _, id := range []string{"a%23b", "a%3Fb", "a%3Fpretty", "%2E%2E", ".hidden", "a%20b", "a%00b", "a%25b", strings.Repeat("x", 129)} {
		for _, route := range []struct{ method, suffix string }{
			{"GET", ""}, {"DELETE", ""}, {"GET", "/content"}, {"GET", "/similar"}, {"GET", "/thumbnail"},
		} {
			req := httptest.NewRequest(route.method, "/v1/images/"+id+route.suffix, nil)
			if code := errorCode(t, do(h, req), http.StatusBadRequest); code != "invalid_id" {
				t.Errorf("%s %s: code %q", route.method, req.URL.Path, code)
			}
		}
	}
	// A '/' (escaped or not) or a dot segment is a different path, not an id.
	for _, p := range []string{"/v1/images/..%2F_search", "/v1/images/a%2Fb", "/v1/images/../_search"} {
		if code := errorCode(t, do(h, httptest.NewRequest("GET", p, nil)), http.StatusNotFound); code != "route_not_found" {
			t.Errorf("GET %s: code %q", p, code)
		}
	}
	if len(svc.similarIDs) != 0 || len(svc.refreshes) != 0 {
		t.Fatalf("refused ids reached the service: similar %v, deletes %d", svc.similarIDs, len(svc.refreshes))
	}
	// The ids ingest makes and accepts pass.
	for _, id := range []string{strings.Repeat("ab", 32), "photo-1.jpg", "album:2024_07"} {
		if rec := do(h, httptest.NewRequest("GET", "/v1/images/"+id, nil)); rec.Code != http.StatusOK {
			t.Errorf("GET %s: %d %s", id, rec.Code, rec.Body)
		}
	}
}

// contentService serves one original whose document says contentType.
type contentService struct {
	*fakeService
	data        []byte
	contentType string
	sha         string
}

type readSeekNopCloser struct{ *bytes.Reader }

func (readSeekNopCloser) Close() error { return nil }

func (s *contentService) Content(_ context.Context, id string) (io.ReadSeekCloser, *service.Image, error) {
	if id == "missing" {
		return nil, nil, apierr.New(apierr.NotFound, "image_not_found", "no image %q", id)
	}
	return readSeekNopCloser{bytes.NewReader(s.data)}, &service.Image{ID: id, ContentType: s.contentType,
		SHA256: s.sha, CreatedAt: time.Unix(1700000000, 0)}, nil
}

func contentServer(s *contentService) http.Handler {
	reg := prometheus.NewRegistry()
	return New(Deps{Config: config.Default(), Service: s, Logger: zap.NewNop(), Registry: reg, Gatherer: reg})
}

// TestContentTypeComesFromTheBytes: the stored document's content_type is
// writable through the index, so it must not decide how a browser treats
// the original (stored XSS on the gateway's origin).
func TestContentTypeComesFromTheBytes(t *testing.T) {
	png := append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 100)...)
	html := []byte("<!doctype html><script>alert(document.domain)</script>")
	sha := strings.Repeat("0f", 32)
	for _, tc := range []struct {
		name, docType, sha  string
		data                []byte
		wantType, wantDispo string
		wantETag            string
	}{
		{"image whose document says html", "text/html", sha, png, "image/png", `inline; filename="img:1.png"`, `"` + sha + `"`},
		{"html whose document says image", "image/png", sha, html, "application/octet-stream", `attachment; filename="img:1.bin"`, `"` + sha + `"`},
		{"svg (scriptable) is not an image here", "image/svg+xml", sha, []byte(`<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>`),
			"application/octet-stream", `attachment; filename="img:1.bin"`, `"` + sha + `"`},
		{"empty original", "image/jpeg", sha, nil, "application/octet-stream", `attachment; filename="img:1.bin"`, `"` + sha + `"`},
		{"rewritten sha256 is no ETag", "image/png", "x\"\r\nSet-Cookie: a=b", png, "image/png", `inline; filename="img:1.png"`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := contentServer(&contentService{fakeService: &fakeService{}, data: tc.data, contentType: tc.docType, sha: tc.sha})
			rec := do(h, httptest.NewRequest("GET", "/v1/images/img:1/content", nil))
			if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), tc.data) {
				t.Fatalf("status %d, body %q", rec.Code, rec.Body)
			}
			hd := rec.Header()
			wantName := strings.Replace(tc.wantDispo, "img:1", "img_1", 1)
			for k, want := range map[string]string{
				"Content-Type": tc.wantType, "Content-Disposition": wantName, "X-Content-Type-Options": "nosniff",
				"Content-Security-Policy": "default-src 'none'; sandbox", "ETag": tc.wantETag,
			} {
				if got := hd.Get(k); got != want {
					t.Errorf("%s: %q, want %q", k, got, want)
				}
			}
		})
	}

	// Range requests still work on the sniffed response.
	h := contentServer(&contentService{fakeService: &fakeService{}, data: png, contentType: "text/html", sha: sha})
	req := httptest.NewRequest("GET", "/v1/images/a/content", nil)
	req.Header.Set("Range", "bytes=1-3")
	rec := do(h, req)
	if rec.Code != http.StatusPartialContent || rec.Body.String() != "PNG" || rec.Header().Get("Content-Type") != "image/png" {
		t.Fatalf("range: %d %q %q", rec.Code, rec.Body, rec.Header().Get("Content-Type"))
	}
	if code := errorCode(t, do(h, httptest.NewRequest("GET", "/v1/images/missing/content", nil)), http.StatusNotFound); code != "image_not_found" {
		t.Fatalf("missing: %q", code)
	}
}
