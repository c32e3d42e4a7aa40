package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/preprocess"
)

// fakeImages embeds "images" deterministically: the vector is derived from
// the SHA-256 of the bytes, so tests can compute the expected vector.
// Bytes starting with "BAD" fail like a corrupt image; "BUSY" like a full queue.
type fakeImages struct {
	calls    atomic.Int64
	inflight atomic.Int64
	maxSeen  atomic.Int64
	// barrier, when set, makes every call wait until that many calls are in
	// flight at once: a test of concurrency that needs no clock.
	barrier int64
	reached chan struct{}
	once    sync.Once
}

func fakeVector(data []byte) []float32 {
	h := sha256.Sum256(data)
	v := make([]float32, 8)
	for i := range v {
		v[i] = float32(h[i]) / 255
	}
	return v
}

func (f *fakeImages) Embed(ctx context.Context, data []byte) ([]float32, preprocess.Info, error) {
	f.calls.Add(1)
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for {
		m := f.maxSeen.Load()
		if n <= m || f.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	if f.barrier > 0 {
		if n >= f.barrier {
			f.once.Do(func() { close(f.reached) })
		}
		select {
		case <-f.reached:
		case <-ctx.Done():
			return nil, preprocess.Info{}, apierr.Wrap(ctx.Err(), apierr.Timeout, "deadline", "waited for the barrier")
		}
	}
	switch {
	case bytes.HasPrefix(data, []byte("BAD")):
		return nil, preprocess.Info{}, apierr.New(apierr.Unprocessable, "image_corrupt", "the image could not be decoded")
	case bytes.HasPrefix(data, []byte("BUSY")):
		return nil, preprocess.Info{}, apierr.New(apierr.Overloaded, "preprocess_queue_full", "too many images").WithRetryAfter(1e9)
	}
	return fakeVector(data), preprocess.Info{Format: "png"}, nil
}

type fakeTexts struct{ calls atomic.Int64 }

func (f *fakeTexts) Embed(ctx context.Context, text string) ([]float32, error) {
	f.calls.Add(1)
	return fakeVector([]byte("text:" + text)), nil
}

// fakeES speaks enough of Elasticsearch's REST API for the sidecar's unit
// tests: it records every request and answers bulk and msearch per item.
type fakeES struct {
	t    *testing.T
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []recorded
	// handler overrides the answer for a path when set.
	handler func(w http.ResponseWriter, r *http.Request, body []byte) bool
	// authenticate answers GET /_security/_authenticate (the sidecar's
	// inference admission probe), which is counted in probes, not recorded
	// with the other requests. Unset, it answers 405 as a distribution
	// without the security module does.
	authenticate func(w http.ResponseWriter, r *http.Request)
	probes       atomic.Int64
}

type recorded struct {
	Method, Path, Query string
	Header              http.Header
	Body                []byte
}

func newFakeES(t *testing.T) *fakeES {
	f := &fakeES{t: t}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeES) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

func (f *fakeES) last() recorded {
	r := f.requests()
	if len(r) == 0 {
		f.t.Fatal("Elasticsearch got no request")
	}
	return r[len(r)-1]
}

func (f *fakeES) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/_security/_authenticate" {
		f.probes.Add(1)
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		w.Header().Set("Content-Type", "application/json")
		if f.authenticate != nil {
			f.authenticate(w, r)
			return
		}
		w.WriteHeader(http.StatusMethodNotAllowed)
		fmt.Fprint(w, `{"error":"Incorrect HTTP method for uri [/_security/_authenticate] and method [GET], allowed: [POST]","status":405}`)
		return
	}
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
	f.mu.Unlock()
	w.Header().Set("X-Elastic-Product", "Elasticsearch")
	w.Header().Set("Content-Type", "application/json")
	if f.handler != nil && f.handler(w, r, body) {
		return
	}
	switch {
	case strings.HasSuffix(r.URL.Path, "/_bulk"):
		f.bulk(w, strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/"), "_bulk"), body)
	case strings.HasSuffix(r.URL.Path, "/_msearch"):
		f.msearch(w, body)
	case r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		w.Header().Set("Allow", "DELETE")
		w.WriteHeader(http.StatusMethodNotAllowed)
		fmt.Fprint(w, `{"error":"Incorrect HTTP method for uri [/] and method [GET], allowed: [DELETE]","status":405}`)
	case r.URL.Path == "/_nodes/_local":
		fmt.Fprint(w, `{"cluster_name":"fake","nodes":{"n1":{"name":"node-1","version":"8.19.21","build_flavor":"default","build_type":"zip","build_hash":"abc"}}}`)
	case r.URL.Path == "/_cluster/state/metadata":
		fmt.Fprint(w, `{"metadata":{"cluster_uuid":"uuid-1"}}`)
	default:
		fmt.Fprint(w, `{"acknowledged":true}`)
	}
}

// bulk answers every action with status 201, or 400 when the document has a
// "fail_in_es" field (an Elasticsearch-side mapping error).
func (f *fakeES) bulk(w http.ResponseWriter, pathIndex string, body []byte) {
	pathIndex = strings.TrimSuffix(pathIndex, "/")
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var items []string
	errs := false
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var act map[string]map[string]any
		if err := json.Unmarshal(line, &act); err != nil {
			w.WriteHeader(400)
			fmt.Fprintf(w, `{"error":{"type":"illegal_argument_exception","reason":"fake: %v"},"status":400}`, err)
			return
		}
		for name, meta := range act {
			status, extra := 201, `"result":"created"`
			if name != "delete" {
				sc.Scan()
				if bytes.Contains(sc.Bytes(), []byte(`"fail_in_es"`)) {
					status, extra, errs = 400, `"error":{"type":"document_parsing_exception","reason":"fake"}`, true
				}
			}
			id, _ := json.Marshal(meta["_id"])
			if meta["_index"] == nil {
				meta["_index"] = pathIndex
			}
			items = append(items, fmt.Sprintf(`{%q:{"_index":%q,"_id":%s,"status":%d,%s}}`, name, meta["_index"], id, status, extra))
		}
	}
	fmt.Fprintf(w, `{"errors":%t,"took":3,"items":[%s],"ingest_took":0}`, errs, strings.Join(items, ","))
}

func (f *fakeES) msearch(w http.ResponseWriter, body []byte) {
	lines := bytes.Split(bytes.TrimRight(body, "\n"), []byte("\n"))
	var out []string
	for i := 0; i+1 < len(lines); i += 2 {
		out = append(out, fmt.Sprintf(`{"took":1,"hits":{"total":{"value":%d}},"status":200}`, i/2))
	}
	fmt.Fprintf(w, `{"took":2,"responses":[%s]}`, strings.Join(out, ","))
}

// harness is a sidecar in front of a fake Elasticsearch.
type harness struct {
	t      *testing.T
	es     *fakeES
	sc     *Sidecar
	srv    *httptest.Server
	images *fakeImages
	texts  *fakeTexts
	reg    *prometheus.Registry
}

func newHarness(t *testing.T, mutate func(*Config, *esproxy.Config)) *harness {
	t.Helper()
	h := &harness{t: t, es: newFakeES(t), images: &fakeImages{}, texts: &fakeTexts{}, reg: prometheus.NewRegistry()}
	cfg := DefaultConfig()
	es := esproxy.DefaultConfig()
	es.Addresses = []string{h.es.srv.URL}
	if mutate != nil {
		mutate(&cfg, &es)
	}
	if h.images.barrier > 0 {
		h.images.reached = make(chan struct{})
	}
	sc, err := New(cfg, es, h.images, h.texts, nil, h.reg)
	if err != nil {
		t.Fatal(err)
	}
	h.sc = sc
	h.srv = httptest.NewServer(sc)
	t.Cleanup(func() { h.srv.Close(); sc.Close() })
	return h
}

// do sends a request to the sidecar and returns status, headers and body.
func (h *harness) do(method, path string, header http.Header, body []byte) (int, http.Header, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if req.Header.Get("Content-Type") == "" && body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// b64 is the base64 of s (the fake embedder takes any bytes as an image).
func b64(s string) string {
	return base64.StdEncoding.EncodeToString([]byte(s))
}
