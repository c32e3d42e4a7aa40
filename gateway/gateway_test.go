package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/service"
)

// fakeService records calls and returns canned results.
type fakeService struct {
	mu        sync.Mutex
	uploads   []service.Upload
	queries   []service.Query
	texts     []string
	ingestErr error
	items     func([]service.Upload) []service.IngestItem
	// refreshes are the refresh policies Ingest and Delete were called with.
	refreshes []string
	// ingestOpts are Ingest's options; similarIDs and existsIDs what Similar
	// and Exists were asked.
	ingestOpts []service.IngestOptions
	similarIDs []string
	existsIDs  [][]string
}

func (f *fakeService) Ingest(_ context.Context, ups []service.Upload, opts service.IngestOptions) ([]service.IngestItem, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.uploads = append(f.uploads, ups...)
	f.refreshes = append(f.refreshes, opts.Refresh)
	f.ingestOpts = append(f.ingestOpts, opts)
	if f.ingestErr != nil {
		return nil, f.ingestErr
	}
	if f.items != nil {
		return f.items(ups), nil
	}
	out := make([]service.IngestItem, len(ups))
	for i, u := range ups {
		out[i] = service.IngestItem{ID: "id-" + u.Filename + u.ID, Result: service.Created}
	}
	return out, nil
}
func (f *fakeService) Get(_ context.Context, id string) (*service.Image, error) {
	if id == "missing" {
		return nil, apierr.New(apierr.NotFound, "image_not_found", "no image %q", id)
	}
	return &service.Image{ID: id}, nil
}
func (f *fakeService) Content(context.Context, string) (io.ReadSeekCloser, *service.Image, error) {
	return nil, nil, apierr.New(apierr.NotFound, "content_not_found", "none")
}
func (f *fakeService) Delete(_ context.Context, _, refresh string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refreshes = append(f.refreshes, refresh)
	return nil
}
func (f *fakeService) SearchImage(_ context.Context, data []byte, q service.Query) ([]service.Hit, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	return []service.Hit{{ID: "a", Score: 0.5}}, nil
}
func (f *fakeService) SearchText(_ context.Context, text string, q service.Query) ([]service.Hit, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.texts = append(f.texts, text)
	f.queries = append(f.queries, q)
	return nil, nil
}

func newTestServer(t *testing.T, mutate func(*config.Config)) (http.Handler, *fakeService, *prometheus.Registry) {
	t.Helper()
	cfg := config.Default()
	if mutate != nil {
		mutate(cfg)
	}
	reg := prometheus.NewRegistry()
	svc := &fakeService{}
	h := New(Deps{Config: cfg, Service: svc, Logger: zap.NewNop(), Registry: reg, Gatherer: reg,
		Checks: []Check{{Name: "es", Ready: func(context.Context) error { return nil }}}})
	return h, svc, reg
}

func do(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// errorCode asserts the response is a JSON error with the given status and returns its code.
func errorCode(t *testing.T, rec *httptest.ResponseRecorder, status int) string {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, rec.Body)
	}
	if body.Error.Code == "" || body.Error.Message == "" {
		t.Fatalf("error body lacks code or message: %s", rec.Body)
	}
	return body.Error.Code
}

func multipartBody(t *testing.T, fields map[string]string, files map[string][]byte) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fw, _ := w.CreateFormFile("file", n)
		fw.Write(files[n])
	}
	for k, v := range fields {
		w.WriteField(k, v)
	}
	w.Close()
	return &buf, w.FormDataContentType()
}

func TestTextSearchValidation(t *testing.T) {
	h, svc, _ := newTestServer(t, nil)
	cases := []struct {
		name, body string
		status     int
		code       string
	}{
		{"malformed", `{"text": "cat"`, 400, "invalid_json"},
		{"not json", `cat`, 400, "invalid_json"},
		{"empty body", ``, 400, "invalid_json"},
		{"unknown field", `{"text":"cat","kk":3}`, 400, "invalid_json"},
		{"wrong type", `{"text":"cat","k":"ten"}`, 400, "invalid_json"},
		{"missing text", `{"k":3}`, 400, "text_missing"},
		{"blank text", `{"text":"   "}`, 400, "text_missing"},
		{"k zero", `{"text":"cat","k":0}`, 400, "invalid_k"},
		{"k too big", `{"text":"cat","k":1001}`, 400, "invalid_k"},
		{"candidates below k", `{"text":"cat","k":50,"num_candidates":10}`, 400, "invalid_num_candidates"},
		{"candidates too many", `{"text":"cat","num_candidates":10001}`, 400, "invalid_num_candidates"},
		{"filter object value", `{"text":"cat","filter":{"a":{"b":1}}}`, 400, "invalid_filter"},
		{"filter bad key", `{"text":"cat","filter":{"a b":"x"}}`, 400, "invalid_filter"},
		{"min score range", `{"text":"cat","min_score":2}`, 400, "invalid_min_score"},
		{"text too large", `{"text":"` + strings.Repeat("x", 5000) + `"}`, 413, "text_too_large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := do(h, httptest.NewRequest("POST", "/v1/search/text", strings.NewReader(tc.body)))
			if got := errorCode(t, rec, tc.status); got != tc.code {
				t.Fatalf("code %q, want %q", got, tc.code)
			}
		})
	}
	if len(svc.texts) != 0 {
		t.Fatalf("service called for invalid requests: %v", svc.texts)
	}
}

func TestTextSearchDefaultsAndLimits(t *testing.T) {
	h, svc, _ := newTestServer(t, nil)
	for _, body := range []string{
		`{"text":"一只猫"}`,
		`{"text":"cat","k":1000,"filter":{"tag":["a","b"],"n":3}}`,
		`{"text":"cat","k":5,"num_candidates":5,"min_score":0.2}`,
	} {
		rec := do(h, httptest.NewRequest("POST", "/v1/search/text", strings.NewReader(body)))
		if rec.Code != 200 {
			t.Fatalf("%s: status %d: %s", body, rec.Code, rec.Body)
		}
		var resp struct {
			Hits []service.Hit `json:"hits"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp.Hits == nil {
			t.Fatalf("hits must be a JSON array even when empty: %s", rec.Body)
		}
	}
	if svc.texts[0] != "一只猫" {
		t.Fatalf("text not passed through: %q", svc.texts[0])
	}
	q := svc.queries
	if q[0].K != 10 || q[0].NumCandidates != 0 {
		t.Fatalf("defaults: got k=%d nc=%d", q[0].K, q[0].NumCandidates)
	}
	if q[1].K != 1000 || q[1].NumCandidates != 0 || len(q[1].Filter) != 2 {
		t.Fatalf("k=1000: got %+v", q[1])
	}
	if q[2].NumCandidates != 5 || q[2].MinScore == nil || *q[2].MinScore != 0.2 {
		t.Fatalf("explicit values: got %+v", q[2])
	}
}

func TestIngestRequestErrors(t *testing.T) {
	h, svc, _ := newTestServer(t, func(c *config.Config) {
		c.Preprocess.MaxBytes = 1000
		c.Server.MaxBodyBytes = 4000
		c.Server.MaxFiles = 2
	})
	body, ct := multipartBody(t, nil, map[string][]byte{"big.jpg": bytes.Repeat([]byte{1}, 1001)})
	cases := []struct {
		name   string
		req    *http.Request
		status int
		code   string
	}{
		{"no content type", httptest.NewRequest("POST", "/v1/images", strings.NewReader("x")), 415, "content_type_missing"},
		{"json body", withCT(httptest.NewRequest("POST", "/v1/images", strings.NewReader("{}")), "application/json"), 415, "content_type_unsupported"},
		{"raw too large", withCT(httptest.NewRequest("POST", "/v1/images", bytes.NewReader(make([]byte, 1001))), "image/png"), 413, "image_too_large"},
		{"body over limit by length", withCT(httptest.NewRequest("POST", "/v1/images", bytes.NewReader(make([]byte, 5000))), "image/png"), 413, "request_too_large"},
		{"part too large", withCT(httptest.NewRequest("POST", "/v1/images", body), ct), 413, "image_too_large"},
		{"bad metadata", withCT(httptest.NewRequest("POST", "/v1/images?metadata=%7Bx", strings.NewReader("img")), "image/png"), 400, "invalid_metadata"},
		{"bad id", withCT(httptest.NewRequest("POST", "/v1/images?id=../x", strings.NewReader("img")), "image/png"), 400, "invalid_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := errorCode(t, do(h, tc.req), tc.status); got != tc.code {
				t.Fatalf("code %q, want %q", got, tc.code)
			}
		})
	}
	mp := func(fields map[string]string, files map[string][]byte) *http.Request {
		b, ct := multipartBody(t, fields, files)
		return withCT(httptest.NewRequest("POST", "/v1/images", b), ct)
	}
	for name, tc := range map[string]struct {
		req  *http.Request
		code string
	}{
		"no file":         {mp(map[string]string{"metadata": "{}"}, nil), "file_missing"},
		"unknown field":   {mp(map[string]string{"colour": "red"}, map[string][]byte{"a": {1}}), "unknown_field"},
		"id with 2 files": {mp(map[string]string{"id": "x1"}, map[string][]byte{"a": {1}, "b": {2}}), "invalid_id"},
		"metadata array":  {mp(map[string]string{"metadata": "[1]"}, map[string][]byte{"a": {1}}), "invalid_metadata"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := errorCode(t, do(h, tc.req), 400); got != tc.code {
				t.Fatalf("code %q, want %q", got, tc.code)
			}
		})
	}
	if got := errorCode(t, do(h, mp(nil, map[string][]byte{"a": {1}, "b": {2}, "c": {3}})), 413); got != "too_many_files" {
		t.Fatalf("too many files: code %q", got)
	}
	if len(svc.uploads) != 0 {
		t.Fatalf("service reached by invalid requests: %d uploads", len(svc.uploads))
	}
}

func withCT(r *http.Request, ct string) *http.Request {
	r.Header.Set("Content-Type", ct)
	return r
}

func TestIngestMultipartAndRaw(t *testing.T) {
	h, svc, _ := newTestServer(t, nil)
	b, ct := multipartBody(t, map[string]string{"metadata": `{"album":"x","n":2}`}, map[string][]byte{"a.jpg": {1, 2}, "b.jpg": {3}})
	rec := do(h, withCT(httptest.NewRequest("POST", "/v1/images", b), ct))
	if rec.Code != 201 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if len(svc.uploads) != 2 || svc.uploads[0].Metadata["album"] != "x" || !bytes.Equal(svc.uploads[1].Data, []byte{3}) {
		t.Fatalf("uploads not parsed: %+v", svc.uploads)
	}
	rec = do(h, withCT(httptest.NewRequest("POST", "/v1/images?id=my-id&metadata=%7B%22k%22%3A1%7D", strings.NewReader("img")), "image/jpeg"))
	if rec.Code != 201 || svc.uploads[2].ID != "my-id" || svc.uploads[2].Metadata["k"] != float64(1) {
		t.Fatalf("raw upload: %d %s %+v", rec.Code, rec.Body, svc.uploads[2])
	}
}

func TestIngestPartialFailure(t *testing.T) {
	h, svc, _ := newTestServer(t, nil)
	bad := apierr.New(apierr.Unprocessable, "image_corrupt", "broken")
	svc.items = func(ups []service.Upload) []service.IngestItem {
		out := make([]service.IngestItem, len(ups))
		for i, u := range ups {
			if u.Filename == "bad" {
				out[i] = service.IngestItem{ID: "x", Err: bad}
			} else {
				out[i] = service.IngestItem{ID: u.Filename, Result: service.Exists}
			}
		}
		return out
	}
	b, ct := multipartBody(t, nil, map[string][]byte{"bad": {1}, "good": {2}})
	rec := do(h, withCT(httptest.NewRequest("POST", "/v1/images", b), ct))
	if rec.Code != 200 {
		t.Fatalf("mixed result: status %d: %s", rec.Code, rec.Body)
	}
	var resp struct {
		Items []struct {
			ID, Result string
			Error      *errorDetail
		}
		Errors bool
	}
	json.Unmarshal(rec.Body.Bytes(), &resp)
	if !resp.Errors || resp.Items[0].Error == nil || resp.Items[0].Error.Code != "image_corrupt" || resp.Items[1].Result != "exists" {
		t.Fatalf("per-item results wrong: %s", rec.Body)
	}
	b, ct = multipartBody(t, nil, map[string][]byte{"bad": {1}})
	if got := errorCode(t, do(h, withCT(httptest.NewRequest("POST", "/v1/images", b), ct)), 422); got != "image_corrupt" {
		t.Fatalf("single failed item: code %q", got)
	}
}

func TestDependencyErrorsCarryRetryAfter(t *testing.T) {
	h, svc, _ := newTestServer(t, nil)
	svc.ingestErr = apierr.New(apierr.Overloaded, "triton_queue_full", "busy").WithRetryAfter(1500e6)
	rec := do(h, withCT(httptest.NewRequest("POST", "/v1/images", strings.NewReader("img")), "image/png"))
	if code := errorCode(t, rec, 429); code != "triton_queue_full" || rec.Header().Get("Retry-After") != "2" {
		t.Fatalf("code %q Retry-After %q", code, rec.Header().Get("Retry-After"))
	}
	svc.ingestErr = apierr.New(apierr.Unavailable, "elasticsearch_unavailable", "down")
	errorCode(t, do(h, withCT(httptest.NewRequest("POST", "/v1/images", strings.NewReader("img")), "image/png")), 503)
	svc.ingestErr = context.DeadlineExceeded
	if code := errorCode(t, do(h, withCT(httptest.NewRequest("POST", "/v1/images", strings.NewReader("img")), "image/png")), 504); code != "deadline_exceeded" {
		t.Fatalf("deadline: code %q", code)
	}
	svc.ingestErr = io.ErrUnexpectedEOF // unknown errors are opaque 500s
	rec = do(h, withCT(httptest.NewRequest("POST", "/v1/images", strings.NewReader("img")), "image/png"))
	if errorCode(t, rec, 500); strings.Contains(rec.Body.String(), "EOF") {
		t.Fatalf("internal error leaked: %s", rec.Body)
	}
}

func TestAuth(t *testing.T) {
	key := "0123456789abcdef0123"
	h, _, _ := newTestServer(t, func(c *config.Config) { c.Auth.APIKeys = []string{key} })
	req := func(hdr, val string) *http.Request {
		r := httptest.NewRequest("GET", "/v1/images/abc", nil)
		if hdr != "" {
			r.Header.Set(hdr, val)
		}
		return r
	}
	for _, r := range []*http.Request{req("", ""), req("X-API-Key", "wrong"), req("Authorization", "ApiKey "+key+"x"), req("Authorization", "Basic "+key)} {
		if code := errorCode(t, do(h, r), 401); code != "unauthorized" {
			t.Fatalf("code %q", code)
		}
	}
	for _, r := range []*http.Request{req("X-API-Key", key), req("Authorization", "ApiKey "+key), req("Authorization", "Bearer "+key)} {
		if rec := do(h, r); rec.Code != 200 {
			t.Fatalf("valid key refused: %d %s", rec.Code, rec.Body)
		}
	}
	if rec := do(h, httptest.NewRequest("GET", "/healthz", nil)); rec.Code != 200 {
		t.Fatalf("/healthz must not need a key: %d", rec.Code)
	}
}

func TestNotFoundAndMethods(t *testing.T) {
	h, _, _ := newTestServer(t, nil)
	if code := errorCode(t, do(h, httptest.NewRequest("GET", "/v1/images/missing", nil)), 404); code != "image_not_found" {
		t.Fatalf("code %q", code)
	}
	errorCode(t, do(h, httptest.NewRequest("GET", "/nope", nil)), 404)
	errorCode(t, do(h, httptest.NewRequest("PUT", "/v1/search/text", nil)), 405)
}

func TestRefusalsAreCounted(t *testing.T) {
	h, _, reg := newTestServer(t, nil)
	do(h, httptest.NewRequest("POST", "/v1/search/text", strings.NewReader(`{"text":"x","k":0}`)))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tusou_refusals_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "invalid_k" && m.GetCounter().GetValue() == 1 {
				return
			}
		}
	}
	t.Fatal("tusou_refusals_total{reason=\"invalid_k\"} was not incremented")
}

// TestOpenAPIMatchesRoutes keeps the published contract and the router in sync.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	var documented []string
	for p, ops := range doc.Paths {
		for m := range ops {
			documented = append(documented, strings.ToUpper(m)+" "+p)
		}
	}
	h, _, _ := newTestServer(t, nil)
	var routed []string
	for _, r := range h.(*gin.Engine).Routes() {
		path := r.Path
		if i := strings.Index(path, ":id"); i >= 0 {
			path = path[:i] + "{id}" + path[i+3:]
		}
		path = strings.Replace(path, "*filepath", "{filepath}", 1) // the page's static files
		routed = append(routed, r.Method+" "+path)
	}
	sort.Strings(documented)
	sort.Strings(routed)
	if strings.Join(documented, "\n") != strings.Join(routed, "\n") {
		t.Fatalf("openapi.json and router differ\ndocumented:\n%s\nrouted:\n%s", strings.Join(documented, "\n"), strings.Join(routed, "\n"))
	}
}

func TestReadyz(t *testing.T) {
	cfg := config.Default()
	reg := prometheus.NewRegistry()
	h := New(Deps{Config: cfg, Service: &fakeService{}, Logger: zap.NewNop(), Registry: reg, Gatherer: reg,
		Checks: []Check{
			{Name: "elasticsearch", Ready: func(context.Context) error { return nil }},
			{Name: "triton", Ready: func(context.Context) error {
				return apierr.New(apierr.Unavailable, "triton_unavailable", "clip_text not ready")
			}},
		}})
	rec := do(h, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "clip_text not ready") || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("readyz: %d %s", rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), "replicas") {
		t.Errorf("readyz lists replicas although no check has any: %s", rec.Body)
	}
}

// TestReadyzReplicas: a check that balances over replicas lists their states
// next to the unchanged checks; readiness is the check's answer (ready while
// one replica is), in both directions.
func TestReadyzReplicas(t *testing.T) {
	states := map[string]string{"10.0.0.1:8001": "ready", "10.0.0.2:8001": "transient_failure"}
	var tritonErr error
	cfg := config.Default()
	reg := prometheus.NewRegistry()
	h := New(Deps{Config: cfg, Service: &fakeService{}, Logger: zap.NewNop(), Registry: reg, Gatherer: reg,
		Checks: []Check{
			{Name: "elasticsearch", Ready: func(context.Context) error { return nil }},
			{Name: "triton", Ready: func(context.Context) error { return tritonErr },
				Replicas: func() map[string]string { return states }},
		}})
	type answer struct {
		Status   string                       `json:"status"`
		Checks   map[string]string            `json:"checks"`
		Replicas map[string]map[string]string `json:"replicas"`
	}
	get := func(wantCode int) answer {
		t.Helper()
		rec := do(h, httptest.NewRequest("GET", "/readyz", nil))
		var a answer
		if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil || rec.Code != wantCode {
			t.Fatalf("readyz: %d %s (%v), want %d", rec.Code, rec.Body, err, wantCode)
		}
		return a
	}

	a := get(200)
	if a.Status != "ok" || a.Checks["triton"] != "ok" || a.Checks["elasticsearch"] != "ok" {
		t.Errorf("one replica ready: %+v", a)
	}
	if len(a.Replicas) != 1 || !maps.Equal(a.Replicas["triton"], states) {
		t.Errorf("replicas %v, want triton: %v", a.Replicas, states)
	}

	states = map[string]string{"10.0.0.1:8001": "transient_failure", "10.0.0.2:8001": "transient_failure"}
	tritonErr = apierr.New(apierr.Unavailable, "triton_unavailable", "cannot reach Triton")
	a = get(503)
	if a.Status != "unavailable" || a.Checks["triton"] != "cannot reach Triton" || !maps.Equal(a.Replicas["triton"], states) {
		t.Errorf("no replica ready: %+v", a)
	}
}
