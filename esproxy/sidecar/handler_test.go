package sidecar

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/tusou/tusou/esproxy"
)

type bulkAnswer struct {
	Took   *int64
	Errors bool
	Items  []map[string]struct {
		Index  string  `json:"_index"`
		ID     *string `json:"_id"`
		Status int
		Error  *struct{ Type, Reason string }
	}
	IngestTook *int64 `json:"ingest_took"`
}

func ndjson(lines ...string) []byte {
	return []byte(strings.Join(lines, "\n") + "\n")
}

func TestBulkEnrichesAndMergesErrors(t *testing.T) {
	h := newHarness(t, nil)
	untouched := `{ "title": "keep me \u00e9" ,"n":1 }`
	body := ndjson(
		`{"index":{"_index":"photos","_id":"a"}}`, `{"image_base64":"`+b64("img a")+`","title":"A"}`,
		`{"index":{"_index":"photos","_id":"plain"}}`, untouched,
		`{"create":{"_index":"photos","_id":"bad"}}`, `{"image_base64":"`+b64("BAD one")+`"}`,
		`{"delete":{"_index":"photos","_id":"gone"}}`,
		`{"update":{"_index":"photos","_id":"u"}}`, `{"doc":{"image_base64":"`+b64("img u")+`"}}`,
		`{"index":{"_index":"photos"}}`, `{"image_base64":"not base64!"}`,
		`{"index":{"_index":"photos","_id":"es-fails"}}`, `{"fail_in_es":1}`,
		`{"create":{"_id":"b"}}`, `{"image_base64":"`+b64("img b")+`"}`,
	)
	status, hdr, resp := h.do("POST", "/photos/_bulk?refresh=wait_for&filter_path=items.*.error", http.Header{"Content-Type": {"application/x-ndjson"}}, body)
	if status != 200 {
		t.Fatalf("%d %s", status, resp)
	}
	if hdr.Get("X-Elastic-Product") != "Elasticsearch" {
		t.Error("X-Elastic-Product missing on a merged answer")
	}
	var ans bulkAnswer
	if err := json.Unmarshal(resp, &ans); err != nil {
		t.Fatalf("%v: %s", err, resp)
	}
	if !ans.Errors || ans.Took == nil || len(ans.Items) != 8 || ans.IngestTook == nil {
		t.Fatalf("answer: %s", resp)
	}
	type want struct {
		action, id string
		status     int
		errType    string
	}
	wants := []want{
		{"index", "a", 201, ""}, {"index", "plain", 201, ""}, {"create", "bad", 400, typeImage},
		{"delete", "gone", 201, ""}, {"update", "u", 201, ""}, {"index", "", 400, typeImage},
		{"index", "es-fails", 400, "document_parsing_exception"}, {"create", "b", 201, ""},
	}
	for i, w := range wants {
		it, ok := ans.Items[i][w.action]
		if !ok {
			t.Errorf("item %d: want action %s, got %s", i, w.action, resp)
			continue
		}
		gotID := ""
		if it.ID != nil {
			gotID = *it.ID
		}
		if gotID != w.id || it.Status != w.status || (w.errType == "") != (it.Error == nil) || (it.Error != nil && it.Error.Type != w.errType) {
			t.Errorf("item %d: got %+v, want %+v", i, it, w)
		}
		if it.Index != "photos" {
			t.Errorf("item %d: index %q", i, it.Index)
		}
	}

	// What Elasticsearch received: the failed items are gone, untouched
	// documents are byte-identical, images became vectors, order is kept.
	got := h.es.last()
	if got.Query != "refresh=wait_for" {
		t.Errorf("query upstream %q: filter_path must be dropped when the answer is merged", got.Query)
	}
	vec := func(s string) string { return string(esproxy.AppendVector(nil, fakeVector([]byte(s)))) }
	wantBody := string(ndjson(
		`{"index":{"_index":"photos","_id":"a"}}`, `{"title":"A","image_embedding":`+vec("img a")+`}`,
		`{"index":{"_index":"photos","_id":"plain"}}`, untouched,
		`{"delete":{"_index":"photos","_id":"gone"}}`,
		`{"update":{"_index":"photos","_id":"u"}}`, `{"doc":{"image_embedding":`+vec("img u")+`}}`,
		`{"index":{"_index":"photos","_id":"es-fails"}}`, `{"fail_in_es":1}`,
		`{"create":{"_id":"b"}}`, `{"image_embedding":`+vec("img b")+`}`,
	))
	if string(got.Body) != wantBody {
		t.Fatalf("upstream body:\n%s\nwant:\n%s", got.Body, wantBody)
	}
	if v := counterValue(h.sc.metrics.bulkItems.WithLabelValues("failed")); v != 2 {
		t.Errorf("failed items metric %v", v)
	}
}

func TestBulkWithoutLocalErrorsStreamsTheAnswer(t *testing.T) {
	h := newHarness(t, nil)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(ndjson(`{"index":{"_index":"p","_id":"1"}}`, `{"image_base64":"`+b64("x")+`"}`))
	zw.Close()
	status, hdr, resp := h.do("POST", "/_bulk?filter_path=errors", http.Header{
		"Content-Type": {"application/x-ndjson"}, "Content-Encoding": {"gzip"}, "X-Opaque-Id": {"req-7"},
	}, gz.Bytes())
	if status != 200 || !strings.Contains(string(resp), `"took":3`) {
		t.Fatalf("%d %s", status, resp)
	}
	if hdr.Get("X-Elastic-Product") != "Elasticsearch" {
		t.Error("product header lost")
	}
	got := h.es.last()
	if got.Header.Get("Content-Encoding") != "" || got.Header.Get("X-Opaque-Id") != "req-7" || got.Query != "filter_path=errors" {
		t.Errorf("upstream headers %v query %q", got.Header, got.Query)
	}
	if !strings.Contains(string(got.Body), `"image_embedding":[`) {
		t.Errorf("gzip body not enriched: %s", got.Body)
	}
}

func TestBulkAllFailedNeverCallsElasticsearch(t *testing.T) {
	h := newHarness(t, nil)
	status, _, resp := h.do("POST", "/_bulk", nil, ndjson(`{"index":{"_index":"p","_id":"1"}}`, `{"image_base64":"`+b64("BAD")+`"}`))
	var ans bulkAnswer
	json.Unmarshal(resp, &ans)
	if status != 200 || !ans.Errors || len(ans.Items) != 1 || ans.Items[0]["index"].Status != 400 {
		t.Fatalf("%d %s", status, resp)
	}
	if n := len(h.es.requests()); n != 0 {
		t.Fatalf("Elasticsearch got %d requests", n)
	}
}

func TestBulkRejectsMalformedBodiesBeforeSendingAnything(t *testing.T) {
	h := newHarness(t, nil)
	img := `{"image_base64":"` + b64("ok") + `"}`
	for name, c := range map[string]struct {
		body   string
		reason string
	}{
		"bad action":      {`{"index":{"_index":"p"}}` + "\n" + img + "\n" + `{"upsert":{}}` + "\n{}\n", "Malformed action/metadata line [3], expected field [create], [delete], [index] or [update] but found [upsert]"},
		"not json":        {"nope\n{}\n", "Malformed action/metadata line [1]"},
		"no newline":      {`{"index":{"_index":"p"}}` + "\n" + img, "terminated by a newline"},
		"missing source":  {`{"index":{"_index":"p"}}` + "\n", "terminated by a newline"},
		"two actions":     {`{"index":{},"create":{}}` + "\n{}\n", "expected END_OBJECT"},
		"meta not object": {`{"index":1}` + "\n{}\n", "expected START_OBJECT"},
	} {
		status, _, resp := h.do("POST", "/_bulk", nil, []byte(c.body))
		var e struct {
			Error  struct{ Type, Reason string }
			Status int
		}
		json.Unmarshal(resp, &e)
		if status != 400 || e.Status != 400 || e.Error.Type != typeIllegalArg || !strings.Contains(e.Error.Reason, c.reason) {
			t.Errorf("%s: %d %s", name, status, resp)
		}
	}
	if n := len(h.es.requests()); n != 0 {
		t.Fatalf("Elasticsearch got %d requests", n)
	}
}

func TestBulkBlankLinesAndRulesPerIndex(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *esproxy.Config) {
		c.Rules = []Rule{{Index: "photos-*", Field: "pic", Kind: KindImage, Target: "pic_vec", Keep: true}}
	})
	body := "\n" + string(ndjson(
		`{"index":{"_index":"photos-1","_id":"1"}}`, `{"pic":"`+b64("p")+`"}`,
		``,
		`{"index":{"_index":"other","_id":"2"}}`, `{"pic":"`+b64("p")+`"}`,
	))
	status, _, resp := h.do("POST", "/_bulk", nil, []byte(body))
	if status != 200 {
		t.Fatalf("%d %s", status, resp)
	}
	got := string(h.es.last().Body)
	lines := strings.Split(strings.TrimRight(got, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("upstream body %q", got)
	}
	if lines[1] != `{"pic":"`+b64("p")+`","pic_vec":`+string(esproxy.AppendVector(nil, fakeVector([]byte("p"))))+`}` {
		t.Errorf("photos-1 not enriched with keep: %s", lines[1])
	}
	if lines[3] != `{"pic":"`+b64("p")+`"}` {
		t.Errorf("index other must not match photos-*: %s", lines[3])
	}
}

// TestBulkEmbedsConcurrently: every image of one bulk is in flight at once
// (the fake embedder waits until all of them are), so the micro-batcher can
// batch them. A sequential implementation would stall until the deadline.
func TestBulkEmbedsConcurrently(t *testing.T) {
	const n = 48
	var h *harness
	h = newHarness(t, func(c *Config, _ *esproxy.Config) {
		c.EmbedConcurrency = 64
		// Only a hang guard: a sequential implementation never reaches the barrier.
		c.RequestTimeout = 30 * time.Second
	})
	h.images.barrier = n
	h.images.reached = make(chan struct{})
	var lines []string
	for i := 0; i < n; i++ {
		lines = append(lines, fmt.Sprintf(`{"index":{"_index":"p","_id":"%d"}}`, i), `{"image_base64":"`+b64(fmt.Sprint("img", i))+`"}`)
	}
	status, _, resp := h.do("POST", "/_bulk", nil, ndjson(lines...))
	if status != 200 || strings.Contains(string(resp), `"errors":true`) {
		t.Fatalf("%d %s", status, resp)
	}
	if got := h.images.maxSeen.Load(); got != n {
		t.Fatalf("max concurrent embeddings %d, want %d", got, n)
	}
}

// TestEmbedConcurrencyIsBounded: with fewer slots than images, the bulk
// still completes (it waits for slots) and never exceeds them.
func TestEmbedConcurrencyIsBounded(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *esproxy.Config) { c.EmbedConcurrency = 3 })
	var lines []string
	for i := 0; i < 20; i++ {
		lines = append(lines, `{"index":{}}`, `{"image_base64":"`+b64(fmt.Sprint(i))+`"}`)
	}
	status, _, resp := h.do("POST", "/p/_bulk", nil, ndjson(lines...))
	if status != 200 || strings.Contains(string(resp), `"errors":true`) {
		t.Fatalf("%d %s", status, resp)
	}
	if got := h.images.maxSeen.Load(); got > 3 || h.images.calls.Load() != 20 {
		t.Fatalf("max in flight %d, calls %d", got, h.images.calls.Load())
	}
}

func TestBulkOverloadedItemIs429(t *testing.T) {
	h := newHarness(t, nil)
	_, _, resp := h.do("POST", "/_bulk", nil, ndjson(
		`{"index":{"_index":"p","_id":"1"}}`, `{"image_base64":"`+b64("BUSY")+`"}`,
		`{"index":{"_index":"p","_id":"2"}}`, `{"image_base64":"`+b64("fine")+`"}`))
	var ans bulkAnswer
	json.Unmarshal(resp, &ans)
	if len(ans.Items) != 2 || ans.Items[0]["index"].Status != 429 || ans.Items[1]["index"].Status != 201 {
		t.Fatalf("%s", resp)
	}
}

func TestBodyLimit(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *esproxy.Config) { c.MaxBodyBytes = 2048 })
	big := ndjson(`{"index":{"_index":"p"}}`, `{"image_base64":"`+strings.Repeat("A", 4096)+`"}`)
	status, _, resp := h.do("POST", "/_bulk", nil, big)
	if status != 413 || !strings.Contains(string(resp), typeTooLong) {
		t.Fatalf("%d %s", status, resp)
	}
	// A gzip bomb is bounded after decoding.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(bytes.Repeat([]byte(" "), 1<<20))
	zw.Close()
	status, _, _ = h.do("PUT", "/p/_doc/1", http.Header{"Content-Encoding": {"gzip"}}, gz.Bytes())
	if status != 413 {
		t.Fatalf("gzip bomb: %d", status)
	}
	if n := len(h.es.requests()); n != 0 {
		t.Fatalf("Elasticsearch got %d requests", n)
	}
}

func TestSingleDocumentWrites(t *testing.T) {
	h := newHarness(t, nil)
	vec := string(esproxy.AppendVector(nil, fakeVector([]byte("one"))))
	for _, c := range []struct{ method, path, body, want string }{
		{"PUT", "/p/_doc/1?refresh=true", `{"image_base64":"` + b64("one") + `","t":1}`, `{"t":1,"image_embedding":` + vec + `}`},
		{"POST", "/p/_doc", `{"image_base64":"` + b64("one") + `"}`, `{"image_embedding":` + vec + `}`},
		{"PUT", "/p/_create/2", `{"image_base64":"` + b64("one") + `"}`, `{"image_embedding":` + vec + `}`},
		{"POST", "/p/_update/1", `{"doc":{"image_base64":"` + b64("one") + `"}}`, `{"doc":{"image_embedding":` + vec + `}}`},
		{"PUT", "/p/_doc/3", `{"plain":true}`, `{"plain":true}`},
	} {
		status, hdr, resp := h.do(c.method, c.path, nil, []byte(c.body))
		if status != 200 || hdr.Get("X-Elastic-Product") != "Elasticsearch" {
			t.Errorf("%s %s: %d %s", c.method, c.path, status, resp)
			continue
		}
		got := h.es.last()
		if string(got.Body) != c.want || got.Method != c.method {
			t.Errorf("%s %s: upstream %s %s, want %s", c.method, c.path, got.Method, got.Body, c.want)
		}
	}
	before := len(h.es.requests())
	status, _, resp := h.do("PUT", "/p/_doc/9", nil, []byte(`{"image_base64":"`+b64("BAD")+`"}`))
	var e struct {
		Error struct {
			RootCause []struct{ Type string } `json:"root_cause"`
			Type      string
			Reason    string
		}
		Status int
	}
	json.Unmarshal(resp, &e)
	if status != 400 || e.Status != 400 || e.Error.Type != typeImage || len(e.Error.RootCause) != 1 || !strings.Contains(e.Error.Reason, "image_base64") {
		t.Fatalf("bad image: %d %s", status, resp)
	}
	if len(h.es.requests()) != before {
		t.Fatal("a document with a bad image reached Elasticsearch")
	}
}

func TestSearchAndMsearch(t *testing.T) {
	h := newHarness(t, nil)
	tb := `{"knn":{"field":"v","k":1,"num_candidates":5,"query_vector_builder":{"text_embedding":{"model_id":"clip_text","model_text":"dog"}}}}`
	status, _, resp := h.do("POST", "/p/_search", nil, []byte(tb))
	if status != 200 {
		t.Fatalf("%d %s", status, resp)
	}
	if got := string(h.es.last().Body); strings.Contains(got, "query_vector_builder") || !strings.Contains(got, `"query_vector":[`) {
		t.Fatalf("search upstream %s", got)
	}
	plain := `{"query":{"match_all":{}}}`
	h.do("GET", "/p/_search", nil, []byte(plain))
	if got := string(h.es.last().Body); got != plain {
		t.Fatalf("plain search changed: %s", got)
	}
	status, _, resp = h.do("POST", "/p/_search", nil, []byte(`{"knn":{"field":"v","query_vector_builder":{"image_embedding":{"image":"`+b64("BAD")+`"}}}}`))
	if status != 400 || !strings.Contains(string(resp), typeImage) {
		t.Fatalf("bad image search: %d %s", status, resp)
	}

	bad := `{"knn":{"field":"v","query_vector_builder":{"image_embedding":{"image":"` + b64("BAD") + `"}}}}`
	body := ndjson(`{}`, tb, `{"index":"q"}`, bad, ``, plain)
	status, _, resp = h.do("POST", "/p/_msearch", http.Header{"Content-Type": {"application/x-ndjson"}}, body)
	var ms struct {
		Took      *int64
		Responses []struct {
			Status int
			Error  *struct{ Type string }
			Hits   *struct{ Total struct{ Value int } }
		}
	}
	json.Unmarshal(resp, &ms)
	if status != 200 || ms.Took == nil || len(ms.Responses) != 3 {
		t.Fatalf("msearch: %d %s", status, resp)
	}
	if ms.Responses[0].Status != 200 || ms.Responses[1].Status != 400 || ms.Responses[1].Error == nil || ms.Responses[1].Error.Type != typeImage ||
		ms.Responses[2].Status != 200 || ms.Responses[2].Hits.Total.Value != 1 {
		t.Fatalf("msearch items: %s", resp)
	}
	up := string(h.es.last().Body)
	if strings.Count(up, "\n") != 4 || strings.Contains(up, "BAD") || !strings.HasSuffix(up, plain+"\n") {
		t.Fatalf("msearch upstream body %q", up)
	}
}

func TestRefusedOperations(t *testing.T) {
	h := newHarness(t, nil)
	for _, c := range []struct{ method, path string }{
		{"DELETE", "/photos"}, {"POST", "/photos/_delete_by_query"}, {"POST", "/photos/_update_by_query"},
		{"PUT", "/_cluster/settings"}, {"PUT", "/_snapshot/r"}, {"GET", "/_security/user"}, {"PUT", "/_nodes/x/shutdown"},
		{"POST", "/_reindex"}, {"POST", "/photos/_close"}, {"PUT", "/photos/_settings"}, {"PUT", "/_ilm/policy/x"},
		{"PUT", "/_ingest/pipeline/x"},
	} {
		status, hdr, resp := h.do(c.method, c.path, nil, []byte(`{}`))
		var e struct {
			Error struct {
				RootCause []struct{ Type, Reason string } `json:"root_cause"`
				Type      string
			}
			Status int
		}
		json.Unmarshal(resp, &e)
		if status != 403 || e.Status != 403 || e.Error.Type != "security_exception" || len(e.Error.RootCause) != 1 ||
			e.Error.RootCause[0].Type != "security_exception" || hdr.Get("X-Elastic-Product") != "Elasticsearch" {
			t.Errorf("%s %s: %d %s", c.method, c.path, status, resp)
		}
	}
	if n := len(h.es.requests()); n != 0 {
		t.Fatalf("refused calls reached Elasticsearch: %d", n)
	}
	if v := counterValue(h.sc.metrics.refused.WithLabelValues("indices.delete")); v != 1 {
		t.Errorf("refused metric %v", v)
	}
	// Invented paths are refused and do not grow the metric label set.
	for i := 0; i < 3; i++ {
		if status, _, _ := h.do("GET", fmt.Sprintf("/_made_up_%d", i), nil, nil); status != 403 {
			t.Fatalf("invented path: %d", status)
		}
	}
	if v := counterValue(h.sc.metrics.refused.WithLabelValues("other")); v != 3 {
		t.Errorf("invented paths counted as %v under \"other\"", v)
	}
	h2 := newHarness(t, func(c *Config, _ *esproxy.Config) { c.Allow = []string{"indices.delete"} })
	if status, _, _ := h2.do("DELETE", "/photos", nil, nil); status != 200 || h2.es.last().Method != "DELETE" {
		t.Fatalf("allowed delete: %d", status)
	}
}

func TestPassThroughKeepsHeadersAndCompression(t *testing.T) {
	h := newHarness(t, nil)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"_id":"1","found":true}`))
	zw.Close()
	h.es.handler = func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if r.URL.Path != "/p/_doc/1" {
			return false
		}
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Warning", `299 Elasticsearch-8.19 "deprecated"`)
		w.WriteHeader(200)
		w.Write(gz.Bytes())
		return true
	}
	status, hdr, body := h.do("GET", "/p/_doc/1?_source=false", http.Header{"Accept-Encoding": {"gzip"}, "Authorization": {"Basic dTpw"}}, nil)
	if status != 200 || hdr.Get("Content-Encoding") != "gzip" || !bytes.Equal(body, gz.Bytes()) ||
		hdr.Get("Warning") == "" || hdr.Get("X-Elastic-Product") != "Elasticsearch" {
		t.Fatalf("%d %v %q", status, hdr, body)
	}
	got := h.es.last()
	if got.Header.Get("Authorization") != "Basic dTpw" || got.Header.Get("Accept-Encoding") != "gzip" || got.Query != "_source=false" {
		t.Fatalf("upstream request %+v", got)
	}
	// A gzip request body on a pass-through call reaches Elasticsearch as sent.
	h.do("POST", "/p/_count", http.Header{"Content-Encoding": {"gzip"}}, gz.Bytes())
	if got := h.es.last(); got.Header.Get("Content-Encoding") != "gzip" || !bytes.Equal(got.Body, gz.Bytes()) {
		t.Fatalf("count upstream %v", got.Header)
	}
}

func TestCredentialsReplace(t *testing.T) {
	h := newHarness(t, func(c *Config, es *esproxy.Config) {
		c.Credentials = CredentialsReplace
		c.APIKeys = []string{"listener-key-0123456789"}
		es.APIKey = "a2V5OnNlY3JldA=="
	})
	h.do("GET", "/p/_doc/1", http.Header{"Authorization": {"ApiKey listener-key-0123456789"}}, nil)
	if got := h.es.last().Header.Get("Authorization"); got != "ApiKey a2V5OnNlY3JldA==" {
		t.Fatalf("Authorization upstream %q", got)
	}
	if _, err := New(Config{}, esproxy.Config{}, &fakeImages{}, &fakeTexts{}, nil, nil); err == nil {
		t.Fatal("empty config accepted")
	}
	cfg := DefaultConfig()
	cfg.Credentials = CredentialsReplace
	cfg.APIKeys = []string{"listener-key-0123456789"}
	es := esproxy.DefaultConfig()
	if _, err := New(cfg, es, &fakeImages{}, &fakeTexts{}, nil, nil); err == nil || !strings.Contains(err.Error(), "credentials: replace") {
		t.Fatalf("replace without credentials: %v", err)
	}
}

func TestRootInfo(t *testing.T) {
	h := newHarness(t, nil)
	status, hdr, body := h.do("GET", "/", http.Header{"Accept": {"application/vnd.elasticsearch+json; compatible-with=8"}}, nil)
	var info struct {
		Name, ClusterName, ClusterUUID string
		Version                        struct{ Number string }
		Tagline                        string
	}
	json.Unmarshal(body, &info)
	if status != 200 || hdr.Get("X-Elastic-Product") != "Elasticsearch" || info.Version.Number != "8.19.21" || info.Tagline == "" {
		t.Fatalf("%d %v %s", status, hdr, body)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/vnd.elasticsearch+json;compatible-with=8" {
		t.Errorf("content type %q", ct)
	}
	if !strings.Contains(string(body), `"cluster_uuid":"uuid-1"`) || !strings.Contains(string(body), `"cluster_name":"fake"`) {
		t.Errorf("body %s", body)
	}
	status, hdr, body = h.do("HEAD", "/", nil, nil)
	if status != 200 || len(body) != 0 || hdr.Get("X-Elastic-Product") != "Elasticsearch" {
		t.Fatalf("HEAD: %d %v", status, hdr)
	}
	// A full distribution answers GET / itself: that answer is passed through.
	h.es.handler = func(w http.ResponseWriter, r *http.Request, _ []byte) bool {
		if r.URL.Path == "/" {
			fmt.Fprint(w, `{"name":"real","version":{"number":"8.19.21","lucene_version":"9.12.2"}}`)
			return true
		}
		return false
	}
	_, _, body = h.do("GET", "/", nil, nil)
	if !strings.Contains(string(body), "lucene_version") {
		t.Fatalf("real root answer not passed through: %s", body)
	}
}

func TestUpstreamDown(t *testing.T) {
	h := newHarness(t, func(_ *Config, es *esproxy.Config) {
		es.Addresses = []string{"http://127.0.0.1:1"}
	})
	status, hdr, body := h.do("GET", "/p/_doc/1", nil, nil)
	if status != 502 || !strings.Contains(string(body), typeUpstream) || hdr.Get("X-Elastic-Product") != "Elasticsearch" {
		t.Fatalf("%d %s", status, body)
	}
}

func TestFailoverToNextNode(t *testing.T) {
	h := newHarness(t, nil)
	sc, err := New(DefaultConfig(), esproxy.Config{Addresses: []string{"http://127.0.0.1:1", h.es.srv.URL}}, h.images, h.texts, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	for i := 0; i < 4; i++ {
		req, _ := http.NewRequest("PUT", "/p/_doc/1", strings.NewReader(`{"a":1}`))
		rec := newRecorder()
		sc.ServeHTTP(rec, req)
		if rec.status != 200 {
			t.Fatalf("try %d: %d %s", i, rec.status, rec.body.String())
		}
	}
}

// recorder is a minimal http.ResponseWriter for direct ServeHTTP calls.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder                    { return &recorder{header: http.Header{}} }
func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(p []byte) (int, error) { return r.body.Write(p) }
func (r *recorder) WriteHeader(code int)        { r.status = code }

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
