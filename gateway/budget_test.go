package gateway

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tusou/tusou/admission"
	"github.com/tusou/tusou/config"
)

func newBudgetServer(t *testing.T, budget int64) (http.Handler, *fakeService, *admission.Budget) {
	t.Helper()
	cfg := config.Default()
	reg := prometheus.NewRegistry()
	b := admission.New(budget, 2*time.Second, reg)
	svc := &fakeService{}
	return New(Deps{Config: cfg, Service: svc, Logger: zap.NewNop(), Registry: reg, Gatherer: reg, Budget: b}), svc, b
}

// onlyReader hides bytes.Reader's length, so the request is chunked.
type onlyReader struct{ io.Reader }

func TestMemoryBudget(t *testing.T) {
	img := bytes.Repeat([]byte{0xAB}, 3<<20)
	h, svc, b := newBudgetServer(t, 2<<20)

	// Declared too large for the budget: 429 with Retry-After, unread.
	req := withCT(httptest.NewRequest("POST", "/v1/images", bytes.NewReader(img)), "image/jpeg")
	rec := do(h, req)
	if code := errorCode(t, rec, http.StatusTooManyRequests); code != admission.CodeOverBudget || rec.Header().Get("Retry-After") != "2" {
		t.Fatalf("declared 3 MiB in a 2 MiB budget: %s, Retry-After %q", code, rec.Header().Get("Retry-After"))
	}
	// Chunked: refused once what has arrived no longer fits.
	req = withCT(httptest.NewRequest("POST", "/v1/images", onlyReader{bytes.NewReader(img)}), "image/jpeg")
	req.ContentLength = -1
	if code := errorCode(t, do(h, req), http.StatusTooManyRequests); code != admission.CodeOverBudget {
		t.Fatalf("chunked 3 MiB in a 2 MiB budget: %s", code)
	}
	if len(svc.uploads) != 0 || b.InUse() != 0 {
		t.Fatalf("refused requests reached the service (%d) or kept budget (%d bytes)", len(svc.uploads), b.InUse())
	}
	// What fits is admitted, intact, and released afterwards.
	small := img[:1<<20]
	for _, chunked := range []bool{false, true} {
		var body io.Reader = bytes.NewReader(small)
		if chunked {
			body = onlyReader{body}
		}
		req = withCT(httptest.NewRequest("POST", "/v1/images", body), "image/jpeg")
		if chunked {
			req.ContentLength = -1
		}
		if rec := do(h, req); rec.Code != http.StatusCreated {
			t.Fatalf("1 MiB (chunked %v): %d %s", chunked, rec.Code, rec.Body)
		}
		if got := svc.uploads[len(svc.uploads)-1].Data; !bytes.Equal(got, small) {
			t.Fatalf("chunked %v: the service got %d bytes, want the 1 MiB sent", chunked, len(got))
		}
		if b.InUse() != 0 {
			t.Fatalf("chunked %v: %d bytes still reserved after the response", chunked, b.InUse())
		}
	}
}

// TestBodyArenaAllocatesTheDeclaredBodyOnce: with a Content-Length, every
// part of a multipart body lands in one allocation of that size, so the
// budget's charge is what the request really holds.
func TestBodyArenaAllocatesTheDeclaredBodyOnce(t *testing.T) {
	files := map[string][]byte{"a.jpg": bytes.Repeat([]byte{1}, 300<<10), "b.jpg": bytes.Repeat([]byte{2}, 700<<10), "c.jpg": {3}}
	body, ct := multipartBody(t, map[string]string{"metadata": `{"k":"v"}`}, files)
	raw := body.Bytes()
	for _, declared := range []int64{int64(len(raw)), -1} {
		b := admission.New(64<<20, time.Second, nil)
		lease, err := b.Reserve("request_body", max(declared, 0))
		if err != nil {
			t.Fatal(err)
		}
		a := &bodyArena{lease: lease, declared: declared}
		req := httptest.NewRequest("POST", "/", bytes.NewReader(raw))
		req.Header.Set("Content-Type", ct)
		mr, err := req.MultipartReader()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]byte{}
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			data, err := a.read(part, 1<<20, "part", "too_large")
			if err != nil {
				t.Fatal(err)
			}
			got[part.FileName()] = data
		}
		for name, want := range files {
			if !bytes.Equal(got[name], want) {
				t.Errorf("declared %d: part %s: %d bytes, want %d", declared, name, len(got[name]), len(want))
			}
		}
		if declared > 0 && a.allocated != declared {
			t.Errorf("declared %d: allocated %d, want exactly the body", declared, a.allocated)
		}
		if lease.Held() != max(a.allocated, declared) || b.InUse() != lease.Held() {
			t.Errorf("declared %d: lease holds %d, budget %d, arena allocated %d", declared, lease.Held(), b.InUse(), a.allocated)
		}
		lease.Release()
	}
	// A part over its limit is refused as too large, whatever the arena holds.
	a := &bodyArena{declared: -1}
	if _, err := a.read(bytes.NewReader(make([]byte, 5000)), 4096, "the image", "image_too_large"); err == nil {
		t.Fatal("a 5000-byte part passed a 4096-byte limit")
	}
}
