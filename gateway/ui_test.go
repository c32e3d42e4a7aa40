package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/thumbnail"
)

// fakeThumbs answers like thumbnail.Maker.
type fakeThumbs struct{ sizes []int }

func (f *fakeThumbs) Get(_ context.Context, id string, size int, inm string) (thumbnail.Thumb, error) {
	f.sizes = append(f.sizes, size)
	switch id {
	case "missing":
		return thumbnail.Thumb{}, apierr.New(apierr.NotFound, "image_not_found", "no image %q", id)
	case "corrupt":
		return thumbnail.Thumb{}, apierr.New(apierr.Unprocessable, "image_corrupt", "the jpeg image could not be decoded")
	}
	t := thumbnail.Thumb{ETag: `"abc-256-t1"`, ContentType: "image/jpeg", Filename: id + "-256.jpg"}
	if inm == t.ETag {
		t.NotModified = true
		return t, nil
	}
	t.Data = []byte("\xff\xd8jpeg")
	return t, nil
}

func newUIServer(t *testing.T, keys []string) (http.Handler, *fakeThumbs) {
	t.Helper()
	cfg := config.Default()
	cfg.Auth.APIKeys = keys
	reg := prometheus.NewRegistry()
	ft := &fakeThumbs{}
	return New(Deps{Config: cfg, Service: &fakeService{}, Logger: zap.NewNop(), Registry: reg, Gatherer: reg, Thumbnails: ft}), ft
}

func TestThumbnailRoute(t *testing.T) {
	h, ft := newUIServer(t, nil)
	rec := do(h, httptest.NewRequest("GET", "/v1/images/cat/thumbnail", nil))
	if rec.Code != 200 || rec.Body.String() != "\xff\xd8jpeg" {
		t.Fatalf("%d %q", rec.Code, rec.Body)
	}
	for k, want := range map[string]string{
		"Content-Type":            "image/jpeg",
		"ETag":                    `"abc-256-t1"`,
		"Cache-Control":           "private, max-age=86400, immutable",
		"X-Content-Type-Options":  "nosniff",
		"Content-Security-Policy": "default-src 'none'; sandbox",
		"Content-Disposition":     `inline; filename="cat-256.jpg"`,
	} {
		if got := rec.Header().Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if ft.sizes[0] != thumbnail.DefaultSize {
		t.Errorf("default size %d", ft.sizes[0])
	}

	req := httptest.NewRequest("GET", "/v1/images/cat/thumbnail?size=256", nil)
	req.Header.Set("If-None-Match", `"abc-256-t1"`)
	rec = do(h, req)
	if rec.Code != 304 || rec.Body.Len() != 0 || rec.Header().Get("ETag") != `"abc-256-t1"` {
		t.Errorf("If-None-Match: %d %q etag %q", rec.Code, rec.Body, rec.Header().Get("ETag"))
	}

	for path, want := range map[string]struct {
		status int
		code   string
	}{
		"/v1/images/cat/thumbnail?size=100":     {400, "invalid_size"},
		"/v1/images/cat/thumbnail?size=4096":    {400, "invalid_size"},
		"/v1/images/missing/thumbnail":          {404, "image_not_found"},
		"/v1/images/corrupt/thumbnail?size=128": {422, "image_corrupt"},
	} {
		rec := do(h, httptest.NewRequest("GET", path, nil))
		if code := errorCode(t, rec, want.status); code != want.code {
			t.Errorf("%s: code %s, want %s", path, code, want.code)
		}
	}
}

func TestThumbnailRouteWithoutMaker(t *testing.T) {
	h, _, _ := newTestServer(t, nil)
	rec := do(h, httptest.NewRequest("GET", "/v1/images/cat/thumbnail", nil))
	if code := errorCode(t, rec, 404); code != "thumbnails_disabled" {
		t.Errorf("code %s", code)
	}
}

// The page loads without a key (it asks for one); the API behind it does not.
func TestPageIsPublicAndLockedDown(t *testing.T) {
	h, _ := newUIServer(t, []string{"0123456789abcdef0123"})
	rec := do(h, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusFound || rec.Header().Get("Location") != "/ui/" {
		t.Errorf("/: %d Location %q", rec.Code, rec.Header().Get("Location"))
	}
	for path, ctype := range map[string]string{"/ui/": "text/html", "/ui/app.js": "javascript", "/ui/style.css": "text/css", "/ui/icon.svg": "image/svg+xml"} {
		rec := do(h, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 || !strings.Contains(rec.Header().Get("Content-Type"), ctype) {
			t.Errorf("%s: %d %q", path, rec.Code, rec.Header().Get("Content-Type"))
			continue
		}
		csp := rec.Header().Get("Content-Security-Policy")
		for _, d := range []string{"default-src 'self'", "script-src 'self';", "style-src 'self';", "object-src 'none'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, d) {
				t.Errorf("%s: CSP %q lacks %q", path, csp, d)
			}
		}
		if strings.Contains(csp, "unsafe") {
			t.Errorf("%s: CSP allows unsafe sources: %q", path, csp)
		}
		if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", path)
		}
	}
	if rec := do(h, httptest.NewRequest("GET", "/ui/nope.js", nil)); rec.Code != 404 {
		t.Errorf("unknown file: %d", rec.Code)
	}
	rec = do(h, httptest.NewRequest("GET", "/v1/images/cat/thumbnail", nil))
	if code := errorCode(t, rec, 401); code == "" {
		t.Error("thumbnail without a key")
	}
	req := httptest.NewRequest("GET", "/v1/images/cat/thumbnail", nil)
	req.Header.Set("Authorization", "ApiKey 0123456789abcdef0123")
	if rec := do(h, req); rec.Code != 200 {
		t.Errorf("thumbnail with the key: %d %s", rec.Code, rec.Body)
	}
}
