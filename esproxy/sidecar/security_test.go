package sidecar

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tusou/tusou/admission"
	"github.com/tusou/tusou/esproxy"
)

const compat7 = "application/vnd.elasticsearch+json;compatible-with=7"

// esErr is Elasticsearch's request-level error shape.
type esErr struct {
	Error struct {
		RootCause []struct{ Type, Reason string } `json:"root_cause"`
		Type      string
		Reason    string
	}
	Status int
}

func parseErr(t *testing.T, body []byte) esErr {
	t.Helper()
	var e esErr
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("not an error body: %s", body)
	}
	return e
}

// bypassShapes are requests that must never reach Elasticsearch with the
// default configuration: typed v7 routes, paths a router could read
// differently from the sidecar, and method or body smuggling.
var bypassShapes = []struct {
	name, method, path string
	header             http.Header
}{
	{"v7 typed put mapping", "PUT", "/idx/_doc/_mapping?include_type_name=true", http.Header{"Content-Type": {compat7}, "Accept": {compat7}}},
	{"typed put mapping without the media type", "PUT", "/idx/_doc/_mapping", nil},
	{"v7 typed delete by query", "POST", "/*/_count/_delete_by_query", http.Header{"Content-Type": {compat7}}},
	{"v7 typed update by query", "POST", "/idx/_mget/_update_by_query", http.Header{"Accept": {compat7}}},
	{"_doc with an API id", "POST", "/idx/_doc/_update_by_query", nil},
	{"_pit with a tail", "POST", "/idx/_pit/_delete_by_query", nil},
	{"_refresh with a tail", "POST", "/idx/_refresh/_delete_by_query", nil},
	{"_field_caps with a tail", "POST", "/idx/_field_caps/_delete_by_query", nil},
	{"_mget with a tail", "POST", "/_mget/_update_by_query", nil},
	{"compat 7 on a plain search", "GET", "/idx/_search", http.Header{"Accept": {"application/vnd.elasticsearch+json; compatible-with = \"7\""}}},
	{"compat 7 listed second", "GET", "/idx/_search", http.Header{"Accept": {"application/vnd.elasticsearch+json;compatible-with=8, application/vnd.elasticsearch+json;compatible-with=7"}}},
	{"encoded underscore literal", "PUT", "/idx/%5Fdoc/1", nil},
	{"encoded underscore id", "PUT", "/idx/_doc/%5fmapping", nil},
	{"encoded slash in index", "PUT", "/idx%2F_doc/1", nil},
	{"encoded slash making an API path", "POST", "/idx%2F_delete_by_query", nil},
	{"double slash", "PUT", "//idx/_doc/1", nil},
	{"inner double slash", "PUT", "/idx//_doc/1", nil},
	{"trailing slash", "POST", "/idx/_delete_by_query/", nil},
	{"dot dot", "POST", "/idx/../_delete_by_query", nil},
	{"encoded dot dot", "POST", "/idx/%2E%2E/_bulk", nil},
	{"dot", "PUT", "/idx/./_doc/1", nil},
	{"upper case API", "PUT", "/idx/_DOC/1", nil},
	{"upper case namespace", "GET", "/_CAT/indices", nil},
	{"path parameter", "GET", "/idx/_search;x=1", nil},
	{"path parameter in id", "PUT", "/idx/_doc/1;_mapping", nil},
	{"index starting with _", "GET", "/_idx/_search", nil},
	{"method override", "GET", "/idx", http.Header{"X-HTTP-Method-Override": {"DELETE"}}},
	{"method override variant", "POST", "/idx/_search", http.Header{"X-Method-Override": {"DELETE"}}},
	{"HEAD on search", "HEAD", "/idx/_search", nil},
	{"body in the query string", "GET", "/idx/_search?source=%7B%7D&source_content_type=application/json", nil},
	{"include_type_name", "PUT", "/idx/_mapping?include_type_name=true", nil},
	{"unknown API", "POST", "/idx/_made_up", nil},
	{"delete everything", "DELETE", "/", nil},
	{"delete all indices", "DELETE", "/_all", nil},
	{"wildcard delete", "DELETE", "/*", nil},
}

func TestBypassShapesAreRefused(t *testing.T) {
	h := newHarness(t, nil)
	for _, c := range bypassShapes {
		status, hdr, body := h.do(c.method, c.path, c.header, []byte(`{"properties":{"evil":{"type":"keyword"}}}`))
		if status != http.StatusForbidden || hdr.Get("X-Elastic-Product") != "Elasticsearch" {
			t.Errorf("%s: %s %s: %d %s", c.name, c.method, c.path, status, body)
			continue
		}
		if c.method != "HEAD" {
			if e := parseErr(t, body); e.Error.Type != typeSecurity || e.Status != 403 || len(e.Error.RootCause) != 1 {
				t.Errorf("%s: error %s", c.name, body)
			}
		}
	}
	if n := len(h.es.requests()); n != 0 {
		t.Fatalf("refused shapes reached Elasticsearch: %+v", h.es.requests())
	}
	if p := h.es.probes.Load(); p != 0 {
		t.Fatalf("refused shapes probed credentials %d times", p)
	}
	// Everything allowed does not open the shapes the table does not know.
	h = newHarness(t, func(c *Config, _ *esproxy.Config) { c.Allow = []string{"*"}; c.WriteGatewayIndex = true })
	for _, c := range bypassShapes {
		if c.name == "delete all indices" || c.name == "wildcard delete" || c.name == "include_type_name" {
			continue // allowed by *, judged by write_indices: see TestWriteRules
		}
		if status, _, body := h.do(c.method, c.path, c.header, []byte(`{}`)); status != http.StatusForbidden {
			t.Errorf("allow *: %s: %d %s", c.name, status, body)
		}
	}
	if n := len(h.es.requests()); n != 0 {
		t.Fatalf("with allow *, refused shapes reached Elasticsearch: %+v", h.es.requests())
	}
}

func TestCompatibleWith7CanBeEnabled(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *esproxy.Config) { c.AllowCompatibleWith7 = true })
	if status, _, body := h.do("POST", "/idx/_search", http.Header{"Content-Type": {compat7}}, []byte(`{}`)); status != 200 {
		t.Fatalf("enabled v7 search: %d %s", status, body)
	}
	// Typed paths stay refused: the table has none.
	for _, p := range []string{"/idx/_doc/_mapping", "/idx/mytype/_mapping", "/idx/_count/_delete_by_query"} {
		if status, _, _ := h.do("PUT", p, http.Header{"Content-Type": {compat7}}, []byte(`{}`)); status != 403 {
			t.Errorf("%s with v7 enabled: %d", p, status)
		}
	}
	// compatible-with=8 is always fine.
	h = newHarness(t, nil)
	if status, _, _ := h.do("GET", "/idx/_search", http.Header{"Accept": {"application/vnd.elasticsearch+json;compatible-with=8"}}, nil); status != 200 {
		t.Fatalf("v8 media type: %d", status)
	}
}

func TestLegitimatePathsPass(t *testing.T) {
	h := newHarness(t, nil)
	for _, c := range []struct{ method, path string }{
		{"PUT", "/idx/_doc/a%2Fb"},                   // ids may hold encoded slashes
		{"PUT", "/idx/_doc/caf%C3%A9"},               // and anything else encoded
		{"GET", "/idx,other*,-x/_search"},            // read expressions
		{"GET", "/_all/_search"},                     // _all reads
		{"GET", "/%3Clogs-%7Bnow%2Fd%7D%3E/_search"}, // date math with an encoded slash
		{"GET", "/_search/scroll/_FGluY2x1ZGVfY29udGV4dF91dWlk"},
		{"GET", "/idx/_doc/1?filter_path=_source"},
		{"HEAD", "/idx"},
		{"HEAD", "/idx/_doc/1"},
	} {
		if status, _, body := h.do(c.method, c.path, nil, nil); status != 200 {
			t.Errorf("%s %s: %d %s", c.method, c.path, status, body)
			continue
		}
		if got := h.es.last(); got.Method != c.method {
			t.Errorf("%s %s: upstream %s", c.method, c.path, got.Method)
		}
	}
	// The escaped path reaches Elasticsearch as sent.
	h.do("PUT", "/idx/_doc/a%2Fb", nil, []byte(`{}`))
	if got := h.es.last(); got.Path != "/idx/_doc/a/b" {
		t.Errorf("decoded path upstream %q", got.Path)
	}
}

func TestWriteRules(t *testing.T) {
	h := newHarness(t, func(c *Config, es *esproxy.Config) {
		es.Index = "gw"
		c.Allow = []string{"indices.put_mapping", "delete_by_query", "indices.delete", "indices.put_settings"}
	})
	refused := []struct{ method, path string }{
		{"PUT", "/gw/_doc/1"}, {"POST", "/gw/_doc"}, {"PUT", "/gw/_create/1"}, {"POST", "/gw/_update/1"},
		{"DELETE", "/gw/_doc/1"}, {"PUT", "/gw-clip-000001/_doc/1"}, {"PUT", "/gw/_mapping"},
		{"POST", "/gw/_delete_by_query"}, {"POST", "/*/_delete_by_query"}, {"POST", "/g*/_delete_by_query"},
		{"POST", "/_all/_delete_by_query"}, {"POST", "/other,gw/_delete_by_query"}, {"POST", "/*,-gw*/_delete_by_query"},
		{"DELETE", "/gw-clip-000001"}, {"DELETE", "/*"}, {"PUT", "/_settings"}, {"PUT", "/%3Cgw-%7Bnow%2Fd%7D%3E/_doc/1"},
		{"PUT", "/gw"}, {"PUT", "/gw-new"},
	}
	for _, c := range refused {
		status, _, body := h.do(c.method, c.path, nil, []byte(`{"a":1}`))
		if status != 403 || !strings.Contains(string(body), "gateway's own index [gw]") {
			t.Errorf("%s %s: %d %s", c.method, c.path, status, body)
		}
	}
	if n := len(h.es.requests()); n != 0 {
		t.Fatalf("writes to the gateway's index reached Elasticsearch: %+v", h.es.requests())
	}
	for _, c := range []struct{ method, path string }{
		{"GET", "/gw/_search"}, {"POST", "/gw/_search"}, {"GET", "/gw/_doc/1"}, {"GET", "/gw*/_count"},
		{"PUT", "/photos/_doc/1"}, {"POST", "/photos/_delete_by_query"}, {"PUT", "/gwx/_doc/1"},
	} {
		if status, _, body := h.do(c.method, c.path, nil, []byte(`{}`)); status != 200 {
			t.Errorf("%s %s: %d %s", c.method, c.path, status, body)
		}
	}

	// Bulk: items for the gateway's index fail in place with 403, the
	// others go through.
	status, _, resp := h.do("POST", "/gw/_bulk", nil, ndjson(
		`{"index":{"_id":"1"}}`, `{"image_base64":"`+b64("x")+`"}`,
		`{"index":{"_index":"photos","_id":"2"}}`, `{"t":1}`,
		`{"delete":{"_index":"gw-clip-000001","_id":"3"}}`,
		`{"update":{"_index":"gw","_id":"4"}}`, `{"doc":{"t":2}}`,
		`{"create":{"_index":"photos","_id":"5"}}`, `{"image_base64":"`+b64("y")+`"}`,
	))
	var ans bulkAnswer
	if err := json.Unmarshal(resp, &ans); err != nil || status != 200 || len(ans.Items) != 5 || !ans.Errors {
		t.Fatalf("bulk: %d %s", status, resp)
	}
	for i, want := range []int{403, 201, 403, 403, 201} {
		for _, it := range ans.Items[i] {
			if it.Status != want || (want == 403 && (it.Error == nil || it.Error.Type != typeSecurity)) {
				t.Errorf("bulk item %d: %+v", i, it)
			}
		}
	}
	up := string(h.es.last().Body)
	if strings.Contains(up, `"gw`) || strings.Count(up, "\n") != 4 || strings.Contains(up, `"_id":"1"`) {
		t.Errorf("bulk upstream body %q", up)
	}
	if h.images.calls.Load() != 1 {
		t.Errorf("a refused item was embedded: %d calls", h.images.calls.Load())
	}

	// write_indices narrows what clients may write; write_gateway_index opens the gateway's.
	h = newHarness(t, func(c *Config, es *esproxy.Config) {
		es.Index = "gw"
		c.WriteIndices = []string{"photos-*", "scratch"}
		c.Allow = []string{"delete_by_query"}
	})
	for path, want := range map[string]int{
		"/photos-1/_doc/1": 200, "/scratch/_doc/1": 200, "/other/_doc/1": 403, "/photos/_doc/1": 403,
	} {
		if status, _, body := h.do("PUT", path, nil, []byte(`{}`)); status != want {
			t.Errorf("write_indices: PUT %s: %d %s", path, status, body)
		}
	}
	for path, want := range map[string]int{"/photos-*/_delete_by_query": 200, "/photos*/_delete_by_query": 403, "/*/_delete_by_query": 403} {
		if status, _, body := h.do("POST", path, nil, []byte(`{}`)); status != want {
			t.Errorf("write_indices: POST %s: %d %s", path, status, body)
		}
	}
	// A reindex (when allowed) writes its destination.
	h = newHarness(t, func(c *Config, es *esproxy.Config) { es.Index = "gw"; c.Allow = []string{"reindex"} })
	for dest, want := range map[string]int{"gw": 403, "gw-clip-000002": 403, "copy": 200, "": 403} {
		body := `{"source":{"index":"photos"},"dest":{"index":"` + dest + `"}}`
		if status, _, resp := h.do("POST", "/_reindex", nil, []byte(body)); status != want {
			t.Errorf("reindex into %q: %d %s", dest, status, resp)
		}
	}
	h = newHarness(t, func(c *Config, es *esproxy.Config) { es.Index = "gw"; c.WriteGatewayIndex = true })
	if status, _, body := h.do("PUT", "/gw/_doc/1", nil, []byte(`{}`)); status != 200 {
		t.Errorf("write_gateway_index: %d %s", status, body)
	}
}

func TestCreateIndexBodies(t *testing.T) {
	h := newHarness(t, func(c *Config, es *esproxy.Config) { es.Index = "gw" })
	for name, c := range map[string]struct {
		body, reason string
	}{
		"gateway alias":         {`{"aliases":{"gw":{}}}`, "may name the gateway's own index [gw]"},
		"gateway alias pattern": {`{"aliases":{"<gw-{now/d}>":{}}}`, "may name the gateway's own index"},
		"any alias by default":  {`{"aliases":{"mine":{}}}`, "not in sidecar.create_index.aliases"},
		"pipeline setting":      {`{"settings":{"index.default_pipeline":"evil"}}`, "[index.default_pipeline]"},
		"nested setting":        {`{"settings":{"index":{"blocks":{"write":true}}}}`, "[index.blocks.write]"},
		"routing setting":       {`{"settings":{"routing.allocation.require._name":"n1"}}`, "[routing.allocation.require._name]"},
		"unknown member":        {`{"settings":{},"templates":{}}`, "body member [templates]"},
	} {
		status, _, body := h.do("PUT", "/newidx", nil, []byte(c.body))
		if status != 403 || !strings.Contains(string(body), c.reason) {
			t.Errorf("%s: %d %s", name, status, body)
		}
	}
	if status, _, body := h.do("PUT", "/newidx", nil, []byte(`{"settings":`)); status != 400 {
		t.Errorf("broken body: %d %s", status, body)
	}
	if n := len(h.es.requests()); n != 0 {
		t.Fatalf("refused create-index bodies reached Elasticsearch: %+v", h.es.requests())
	}
	good := `{"settings":{"index":{"number_of_shards":1},"number_of_replicas":0,"analysis":{"analyzer":{"a":{"type":"standard"}}}},"mappings":{"properties":{"v":{"type":"dense_vector","dims":8}}}}`
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(good))
	zw.Close()
	if status, _, body := h.do("PUT", "/newidx", http.Header{"Content-Encoding": {"gzip"}}, gz.Bytes()); status != 200 {
		t.Fatalf("allowed body: %d %s", status, body)
	}
	if got := h.es.last(); string(got.Body) != good || got.Header.Get("Content-Encoding") != "" {
		t.Errorf("upstream create body %q (%v)", got.Body, got.Header)
	}
	if status, _, _ := h.do("PUT", "/newidx", nil, nil); status != 200 {
		t.Errorf("empty create body: %d", status)
	}

	// Aliases the rules allow pass; the gateway's never does.
	h = newHarness(t, func(c *Config, es *esproxy.Config) {
		es.Index = "gw"
		c.CreateIndex.Aliases = []string{"*"}
		c.Allow = []string{"indices.update_aliases", "indices.clone"}
	})
	if status, _, body := h.do("PUT", "/newidx", nil, []byte(`{"aliases":{"mine":{}}}`)); status != 200 {
		t.Errorf("allowed alias: %d %s", status, body)
	}
	for _, c := range []struct{ method, path, body string }{
		{"PUT", "/newidx", `{"aliases":{"gw":{"is_write_index":true}}}`},
		{"PUT", "/newidx/_alias/gw", ``},
		{"POST", "/newidx/_aliases/gw-x", ``},
		{"POST", "/_aliases", `{"actions":[{"add":{"index":"newidx","alias":"gw"}}]}`},
		{"POST", "/_aliases", `{"actions":[{"add":{"indices":["a","b"],"aliases":["x","gw"]}}]}`},
		{"POST", "/_aliases", `{"actions":[{"remove_index":{"index":"gw-clip-000001"}}]}`},
		{"POST", "/other/_clone/target", `{"aliases":{"gw":{}}}`},
	} {
		if status, _, body := h.do(c.method, c.path, nil, []byte(c.body)); status != 403 || !strings.Contains(string(body), "gateway's own index") {
			t.Errorf("%s %s %s: %d %s", c.method, c.path, c.body, status, body)
		}
	}
	if status, _, body := h.do("POST", "/_aliases", nil, []byte(`{"actions":[{"add":{"index":"newidx","alias":"mine2"}}]}`)); status != 200 {
		t.Errorf("allowed alias action: %d %s", status, body)
	}
}

// countingTexts records the most goroutines alive while a text is embedded.
type countingTexts struct {
	fakeTexts
	maxGoroutines atomic.Int64
}

func (c *countingTexts) Embed(ctx context.Context, text string) ([]float32, error) {
	n := int64(runtime.NumGoroutine())
	for {
		m := c.maxGoroutines.Load()
		if n <= m || c.maxGoroutines.CompareAndSwap(m, n) {
			break
		}
	}
	return c.fakeTexts.Embed(ctx, text)
}

func msearchBody(n int) []byte {
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "{}\n{\"knn\":{\"field\":\"v\",\"k\":1,\"num_candidates\":1,\"query_vector_builder\":{\"text_embedding\":{\"model_id\":\"clip_text\",\"model_text\":\"t%d\"}}}}\n", i)
	}
	return b.Bytes()
}

func TestMsearchAdmission(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *esproxy.Config) { c.MaxQueryBuilders = 1000; c.EmbedConcurrency = 4 })
	texts := &countingTexts{}
	h.sc.texts = texts

	// ~1M builders in a small gzip body: refused before any is parsed or computed.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	item := msearchBody(1)
	for i := 0; i < 1<<20; i++ {
		zw.Write(item)
	}
	zw.Close()
	status, _, body := h.do("POST", "/_msearch", http.Header{"Content-Encoding": {"gzip"}, "Content-Type": {"application/x-ndjson"}}, gz.Bytes())
	if status != 400 || !strings.Contains(string(body), "max_query_builders") {
		t.Fatalf("1M builders: %d %s", status, body)
	}
	if texts.calls.Load() != 0 || len(h.es.requests()) != 0 {
		t.Fatalf("work done before admission: %d embeddings, %d upstream calls", texts.calls.Load(), len(h.es.requests()))
	}
	// One search body with too many builders.
	one := `{"knn":[` + strings.Repeat(`{"field":"v","query_vector_builder":{"text_embedding":{"model_id":"clip_text","model_text":"x"}}},`, 1000) +
		`{"field":"v","query_vector_builder":{"text_embedding":{"model_id":"clip_text","model_text":"x"}}}]}`
	if status, _, body := h.do("POST", "/_search", nil, []byte(one)); status != 400 || !strings.Contains(string(body), "max_query_builders") {
		t.Fatalf("search with 1001 builders: %d %s", status, body)
	}

	// At the limit every item is computed, by a bounded pool: the
	// goroutines alive stay far below one per item (the old code started
	// 1000 before taking a slot).
	base := runtime.NumGoroutine()
	status, _, body = h.do("POST", "/_msearch", http.Header{"Content-Type": {"application/x-ndjson"}}, msearchBody(1000))
	if status != 200 {
		t.Fatalf("1000 builders: %d %s", status, body)
	}
	if texts.calls.Load() != 1000 {
		t.Fatalf("embedded %d of 1000", texts.calls.Load())
	}
	if peak := texts.maxGoroutines.Load(); peak > int64(base+msearchWorkers+4+16) {
		t.Fatalf("peak goroutines %d with %d before the request: not bounded by the pool", peak, base)
	}
}

// fullBudget admits nothing, as a process-wide budget does when memory is taken.
type fullBudget struct{ asked atomic.Int64 }

func (f *fullBudget) TryAcquire(n int64) bool { f.asked.Add(1); return false }
func (f *fullBudget) Release(n int64)         { panic("released bytes never acquired") }

func TestInflightBytesBudget(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *esproxy.Config) { c.MaxBodyBytes = 1 << 20; c.MaxInflightBytes = 1 << 20 })
	// A held reservation leaves no room: the next bulk gets 429 at once.
	rv := &reservation{budgets: h.sc.budgets}
	if !rv.grow(1<<20 - 10) {
		t.Fatal("budget refused its own size")
	}
	body := ndjson(`{"index":{"_index":"p"}}`, `{"image_base64":"`+b64("x")+`"}`)
	status, hdr, resp := h.do("POST", "/_bulk", nil, body)
	if status != 429 || hdr.Get("Retry-After") == "" || !strings.Contains(string(resp), typeOverloaded) {
		t.Fatalf("over budget: %d %v %s", status, hdr, resp)
	}
	// A gzip body counts its decoded size: 3 KB on the wire, 1 MB decoded.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(ndjson(`{"index":{"_index":"p"}}`, `{"pad":"`+strings.Repeat("a", 900<<10)+`"}`))
	zw.Close()
	rv.release()
	rv.grow(512 << 10)
	status, hdr, resp = h.do("POST", "/_bulk", http.Header{"Content-Encoding": {"gzip"}}, gz.Bytes())
	if status != 429 || hdr.Get("Retry-After") == "" {
		t.Fatalf("gzip over budget: %d %s", status, resp)
	}
	if n := len(h.es.requests()); n != 0 {
		t.Fatalf("requests over budget reached Elasticsearch: %d", n)
	}
	rv.release()
	// Released: the same bulk passes, and the budget is whole again after it.
	if status, _, resp := h.do("POST", "/_bulk", nil, body); status != 200 {
		t.Fatalf("after release: %d %s", status, resp)
	}
	// The handler releases its reservation as it returns, which may be just
	// after the client has read the answer.
	budget := h.sc.budgets[0].(*admission.Budget)
	for giveUp := time.Now().Add(10 * time.Second); budget.InUse() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(giveUp) {
			t.Fatalf("%d bytes still reserved after the requests ended", budget.InUse())
		}
	}
	// A process-wide budget added with UseBudget is consulted too.
	full := &fullBudget{}
	h.sc.UseBudget(full)
	if status, _, _ := h.do("POST", "/_bulk", nil, body); status != 429 || full.asked.Load() == 0 {
		t.Fatalf("process budget: %d, asked %d", status, full.asked.Load())
	}
	// Pass-through calls stream and reserve nothing.
	if status, _, _ := h.do("POST", "/p/_count", nil, []byte(`{}`)); status != 200 {
		t.Fatalf("count under a full budget: %d", status)
	}
}

func TestForwardModeAuthenticatesBeforeInference(t *testing.T) {
	h := newHarness(t, nil)
	h.es.authenticate = func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Basic Z29vZDpvbmU=" {
			fmt.Fprint(w, `{"username":"good"}`)
			return
		}
		w.Header().Add("WWW-Authenticate", `Basic realm="security", charset="UTF-8"`)
		w.Header().Add("WWW-Authenticate", `ApiKey`)
		w.WriteHeader(401)
		reason := "missing authentication credentials for REST request [/_security/_authenticate]"
		if r.Header.Get("Authorization") != "" {
			reason = "unable to authenticate user [bad] for REST request [/_security/_authenticate]"
		}
		fmt.Fprintf(w, `{"error":{"root_cause":[{"type":"security_exception","reason":%q}],"type":"security_exception","reason":%q},"status":401}`, reason, reason)
	}
	img := ndjson(`{"index":{"_index":"p","_id":"1"}}`, `{"image_base64":"`+b64("x")+`"}`)
	search := []byte(`{"knn":{"field":"v","query_vector_builder":{"text_embedding":{"model_id":"clip_text","model_text":"dog"}}}}`)
	for _, auth := range []string{"", "Basic YmFkOnBhc3M="} {
		hdr := http.Header{}
		if auth != "" {
			hdr.Set("Authorization", auth)
		}
		for _, c := range []struct {
			method, path string
			body         []byte
		}{
			{"POST", "/_bulk", img}, {"PUT", "/p/_doc/1", []byte(`{"image_base64":"` + b64("x") + `"}`)},
			{"POST", "/p/_search", search}, {"POST", "/p/_msearch", append([]byte("{}\n"), append(search, '\n')...)},
		} {
			status, rh, body := h.do(c.method, c.path, hdr, c.body)
			e := parseErr(t, body)
			if status != 401 || e.Error.Type != typeSecurity || len(rh.Values("WWW-Authenticate")) != 2 ||
				!strings.Contains(e.Error.Reason, "["+strings.SplitN(c.path, "?", 2)[0]+"]") {
				t.Errorf("auth %q %s %s: %d %v %s", auth, c.method, c.path, status, rh, body)
			}
		}
	}
	if h.images.calls.Load() != 0 || h.texts.calls.Load() != 0 || len(h.es.requests()) != 0 {
		t.Fatalf("unauthenticated clients got inference: %d images, %d texts, %d upstream calls",
			h.images.calls.Load(), h.texts.calls.Load(), len(h.es.requests()))
	}
	// Calls without inference go to Elasticsearch, which answers them itself.
	if status, _, _ := h.do("GET", "/p/_doc/1", nil, nil); status != 200 || len(h.es.requests()) != 1 {
		t.Fatalf("plain get: %d", status)
	}
	// Good credentials: inference runs; the admission is cached.
	good := http.Header{"Authorization": {"Basic Z29vZDpvbmU="}}
	probes := h.es.probes.Load()
	for i := 0; i < 3; i++ {
		if status, _, body := h.do("POST", "/_bulk", good, img); status != 200 || strings.Contains(string(body), `"errors":true`) {
			t.Fatalf("good credentials: %d %s", status, body)
		}
	}
	if h.images.calls.Load() != 3 || h.es.probes.Load() != probes+1 {
		t.Fatalf("good credentials: %d embeddings, %d probes", h.images.calls.Load(), h.es.probes.Load()-probes)
	}
}

func TestReplaceModeAPIKey(t *testing.T) {
	const key = "listener-key-0123456789"
	h := newHarness(t, func(c *Config, es *esproxy.Config) {
		c.Credentials = CredentialsReplace
		c.APIKeys = []string{key}
		es.APIKey = "Z2F0ZXdheTprZXk="
	})
	img := ndjson(`{"index":{"_index":"p","_id":"1"}}`, `{"image_base64":"`+b64("x")+`"}`)
	for _, auth := range []string{"", "ApiKey wrong-key-0123456789", "Basic " + key, "ApiKey " + key + "x"} {
		hdr := http.Header{}
		if auth != "" {
			hdr.Set("Authorization", auth)
		}
		status, rh, body := h.do("POST", "/_bulk", hdr, img)
		if status != 401 || rh.Get("WWW-Authenticate") != "ApiKey" || parseErr(t, body).Error.Type != typeSecurity {
			t.Errorf("auth %q: %d %v %s", auth, status, rh, body)
		}
	}
	if h.images.calls.Load() != 0 || len(h.es.requests()) != 0 || h.es.probes.Load() != 0 {
		t.Fatal("a client without the listener's key got through")
	}
	status, _, body := h.do("POST", "/_bulk", http.Header{
		"Authorization":              {"ApiKey " + key},
		"Es-Security-Runas-User":     {"elastic"},
		"X-Elastic-Product-Origin":   {"kibana"},
		"Es-Secondary-Authorization": {"Basic ZWxhc3RpYzpzZWNyZXQ="},
	}, img)
	if status != 200 || h.images.calls.Load() != 1 {
		t.Fatalf("right key: %d %s", status, body)
	}
	got := h.es.last().Header
	if got.Get("Authorization") != "ApiKey Z2F0ZXdheTprZXk=" || got.Get("Es-Security-Runas-User") != "" ||
		got.Get("X-Elastic-Product-Origin") != "" || got.Get("Es-Secondary-Authorization") != "" {
		t.Fatalf("upstream headers in replace mode: %v", got)
	}
}
