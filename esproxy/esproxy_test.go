package esproxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tusou/tusou/apierr"
)

// --- helpers -----------------------------------------------------------------

var testProv = Provenance{Model: "clip_image", Version: "1", Dims: 8}

func testConfig(addr string) Config {
	cfg := DefaultConfig()
	cfg.Addresses = []string{addr}
	cfg.Index = "test-images"
	cfg.Dims = testProv.Dims
	cfg.Replicas = 0
	cfg.MaxRetries = 0
	return cfg
}

// fakeES serves h behind the product header go-elasticsearch insists on.
func fakeES(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		w.Header().Set("Content-Type", "application/json")
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func newTestClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	c.prov.Store(&testProv) // as after EnsureIndex
	wi := ConcreteIndexName(cfg.Index, testProv)
	c.writeIndex.Store(&wi)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// unitVector returns a deterministic random unit vector.
func unitVector(rng *rand.Rand, dims int) []float32 {
	v := make([]float32, dims)
	var sq float64
	for i := range v {
		v[i] = float32(rng.NormFloat64())
		sq += float64(v[i]) * float64(v[i])
	}
	n := float32(math.Sqrt(sq))
	for i := range v {
		v[i] /= n
	}
	return v
}

func wantKind(t *testing.T, err error, kind apierr.Kind, code string) *apierr.Error {
	t.Helper()
	e := apierr.As(err)
	if e == nil {
		t.Fatalf("want *apierr.Error kind %s, got %v", kind, err)
	}
	if e.Kind != kind || (code != "" && e.Code != code) {
		t.Fatalf("want kind %s code %q, got kind %s code %q: %v", kind, code, e.Kind, e.Code, err)
	}
	return e
}

// --- config ------------------------------------------------------------------

func TestDefaultConfigValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidateNamesEveryBadField(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Addresses = []string{"localhost:9200"}
	cfg.Username = "u"
	cfg.Index = "Bad Index"
	cfg.VectorField = "metadata"
	cfg.Dims = 0
	cfg.Similarity = "l2"
	cfg.IndexOptions.M = 1
	cfg.Shards = 0
	cfg.Replicas = -1
	cfg.RequestTimeout = 0
	cfg.Refresh = "now"
	cfg.RefreshMinInterval = -time.Millisecond
	cfg.NumCandidatesFactor = 0
	err := cfg.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, field := range []string{"addresses[0]:", "username/password:", "index:", "vector_field:", "dims:",
		"similarity:", "index_options.m:", "shards:", "replicas:", "request_timeout:", "refresh:", "refresh_min_interval:", "num_candidates_factor:"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %q:\n%v", field, err)
		}
	}
}

func TestConfigIndexOptions(t *testing.T) {
	ci := 0.95
	bad := 0.5
	for _, tc := range []struct {
		opts IndexOptions
		ok   bool
	}{
		{IndexOptions{Type: "int8_hnsw", M: 16, EFConstruction: 100, ConfidenceInterval: &ci}, true},
		{IndexOptions{Type: "flat"}, true},
		{IndexOptions{Type: "hnsw", M: 16, EFConstruction: 100, ConfidenceInterval: &ci}, false},
		{IndexOptions{Type: "int8_hnsw", M: 16, EFConstruction: 100, ConfidenceInterval: &bad}, false},
		{IndexOptions{Type: "ivf"}, false},
	} {
		cfg := DefaultConfig()
		cfg.IndexOptions = tc.opts
		if err := cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: ok=%v, err=%v", tc.opts, tc.ok, err)
		}
	}
}

// --- encoding ----------------------------------------------------------------

func TestAppendVectorRoundTripsFloat32Exactly(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	v := []float32{0, float32(math.Copysign(0, -1)), 1, -1, math.MaxFloat32, math.SmallestNonzeroFloat32, 1e-7, 123456789}
	for range 10000 {
		v = append(v, math.Float32frombits(rng.Uint32()&^(0xFF<<23)|uint32(rng.IntN(254)+1)<<23)) // any finite
	}
	var back []float32
	if err := json.Unmarshal(AppendVector(nil, v), &back); err != nil {
		t.Fatal(err)
	}
	for i := range v {
		if math.Float32bits(v[i]) != math.Float32bits(back[i]) {
			t.Fatalf("v[%d]=%g came back as %g", i, v[i], back[i])
		}
	}
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uo\te`, "tab\tnl\ncr\r\x00\x1f", "图搜 ✓", "bad\xffutf8\xc3", "<html>&"} {
		var got, want string
		if err := json.Unmarshal(appendString(nil, s), &got); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		ref, _ := json.Marshal(s)
		_ = json.Unmarshal(ref, &want)
		if got != want {
			t.Errorf("%q: got %q, encoding/json gives %q", s, got, want)
		}
	}
}

func TestAppendSourceIsTheDocument(t *testing.T) {
	c := newTestClient(t, testConfig("http://127.0.0.1:9"))
	created := time.Date(2024, 5, 6, 7, 8, 9, 123e6, time.UTC)
	d := Doc{ID: "x", Vector: unitVector(rand.New(rand.NewPCG(3, 4)), testProv.Dims), ContentType: "image/png",
		Width: 3, Height: 4, Bytes: 99, SHA256: "ab", CreatedAt: created,
		Metadata: map[string]any{"tag": "cat", "n": 5, "nested": map[string]any{"k": true}}}
	b, err := c.appendSource(nil, &d, &testProv, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	// The reference: the same document through encoding/json.
	vec := make([]any, len(d.Vector))
	for i, f := range d.Vector {
		vec[i] = float64(f)
	}
	wantJSON, _ := json.Marshal(map[string]any{
		"model": testProv.Model, "model_version": testProv.Version, "dims": testProv.Dims,
		"content_type": d.ContentType, "width": d.Width, "height": d.Height, "bytes": d.Bytes, "sha256": d.SHA256,
		"created_at": created.Format("2006-01-02T15:04:05.000Z07:00"), "metadata": d.Metadata, "image_embedding": vec,
	})
	var want map[string]any
	_ = json.Unmarshal(wantJSON, &want)
	// float32 text parses to the float64 nearest that text, not float64(f);
	// compare vectors as float32.
	gv, wv := got["image_embedding"].([]any), want["image_embedding"].([]any)
	for i := range gv {
		if float32(gv[i].(float64)) != float32(wv[i].(float64)) {
			t.Fatalf("vector[%d]: %v vs %v", i, gv[i], wv[i])
		}
	}
	delete(got, "image_embedding")
	delete(want, "image_embedding")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("source\n got %v\nwant %v", got, want)
	}
}

func TestValidateDocRefusesBadVectors(t *testing.T) {
	c := newTestClient(t, testConfig("http://127.0.0.1:9"))
	good := unitVector(rand.New(rand.NewPCG(5, 6)), testProv.Dims)
	nan := append([]float32(nil), good...)
	nan[2] = float32(math.NaN())
	for name, d := range map[string]Doc{
		"no id":      {Vector: good},
		"long id":    {ID: strings.Repeat("a", 513), Vector: good},
		"short":      {ID: "a", Vector: good[:3]},
		"nan":        {ID: "a", Vector: nan},
		"zero":       {ID: "a", Vector: make([]float32, testProv.Dims)},
		"neg height": {ID: "a", Vector: good, Height: -1},
	} {
		wantKind(t, c.validateDoc(&d), apierr.InvalidArgument, CodeInvalidDoc)
		_ = name
	}
	// dot_product additionally needs unit length.
	cfg := testConfig("http://127.0.0.1:9")
	cfg.Similarity = "dot_product"
	dp := newTestClient(t, cfg)
	long := append([]float32(nil), good...)
	long[0] *= 2
	wantKind(t, dp.validateDoc(&Doc{ID: "a", Vector: long}), apierr.InvalidArgument, CodeInvalidDoc)
	if err := dp.validateDoc(&Doc{ID: "a", Vector: good}); err != nil {
		t.Fatal(err)
	}
}

// --- index naming and mapping checks ------------------------------------------

func TestConcreteIndexName(t *testing.T) {
	provs := []Provenance{
		testProv,
		{Model: "clip_image", Version: "2", Dims: 8},
		{Model: "clip_image", Version: "1", Dims: 16},
		{Model: "OpenAI/CLIP ViT-B/32", Version: "sha256:ABCDEF0123456789ABCDEF0123456789", Dims: 512},
		{Model: "openai_clip_vit-b_32", Version: "", Dims: 512},
	}
	seen := map[string]bool{}
	for _, p := range provs {
		name := ConcreteIndexName("tusou-images", p)
		if err := validateIndexName(name); err != nil && !strings.Contains(err.Error(), "at most 100") {
			t.Errorf("%v -> %q: %v", p, name, err)
		}
		if len(name) > 255 || !strings.HasPrefix(name, "tusou-images-") || !strings.HasSuffix(name, "-000001") {
			t.Errorf("%v -> %q", p, name)
		}
		if seen[name] {
			t.Errorf("%v -> %q collides", p, name)
		}
		seen[name] = true
		if name != ConcreteIndexName("tusou-images", p) {
			t.Errorf("not deterministic")
		}
	}
}

// existingFromBody turns our own create-index body into what GET /<alias>
// returns, so the acceptance check is tested against the mapping we write.
func existingFromBody(t *testing.T, c *Client, name string, p Provenance) map[string]existingIndex {
	t.Helper()
	body, err := c.indexBody(p, true)
	if err != nil {
		t.Fatal(err)
	}
	var ix existingIndex
	if err := json.Unmarshal(body, &ix); err != nil {
		t.Fatal(err)
	}
	return map[string]existingIndex{name: ix}
}

func TestCheckExisting(t *testing.T) {
	c := newTestClient(t, testConfig("http://127.0.0.1:9"))
	name := ConcreteIndexName(c.cfg.Index, testProv)
	info, err := c.checkExisting(existingFromBody(t, c, name, testProv), testProv)
	if err != nil || info.WriteIndex != name {
		t.Fatalf("own mapping refused: %+v %v", info, err)
	}
	for _, other := range []Provenance{
		{Model: "other", Version: "1", Dims: 8},
		{Model: "clip_image", Version: "2", Dims: 8},
		{Model: "clip_image", Version: "1", Dims: 16},
	} {
		_, err := c.checkExisting(existingFromBody(t, c, "old-index", other), testProv)
		e := wantKind(t, err, apierr.Conflict, CodeIndexMismatch)
		if !strings.Contains(e.Message, "old-index") || !strings.Contains(e.Message, other.String()) ||
			!strings.Contains(e.Message, testProv.String()) {
			t.Errorf("message does not name index, actual and expected: %s", e.Message)
		}
	}
	// A concrete index where the alias should be, even with our mapping.
	asIndex := existingFromBody(t, c, c.cfg.Index, testProv)
	ix := asIndex[c.cfg.Index]
	ix.Aliases = nil
	asIndex[c.cfg.Index] = ix
	_, err = c.checkExisting(asIndex, testProv)
	if e := wantKind(t, err, apierr.Conflict, CodeIndexMismatch); !strings.Contains(e.Message, "not an alias") {
		t.Errorf("message: %s", e.Message)
	}
	// An index someone made by hand, without provenance.
	bare := map[string]existingIndex{"hand-made": {}}
	wantKind(t, func() error { _, err := c.checkExisting(bare, testProv); return err }(), apierr.Conflict, CodeIndexMismatch)
}

// --- request bodies -----------------------------------------------------------

func TestKNNBody(t *testing.T) {
	c := newTestClient(t, testConfig("http://127.0.0.1:9"))
	v := unitVector(rand.New(rand.NewPCG(7, 8)), testProv.Dims)
	sim := float32(0.5)
	b, _, err := c.knnBody(KNNQuery{Vector: v, K: 5, Similarity: &sim,
		Filter: map[string]any{"tag": "cat", "n": []any{1, 2.5, "x"}, "a.b": true}})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		KNN struct {
			Field         string           `json:"field"`
			QueryVector   []float32        `json:"query_vector"`
			K             int              `json:"k"`
			NumCandidates int              `json:"num_candidates"`
			Similarity    float32          `json:"similarity"`
			Filter        []map[string]any `json:"filter"`
		} `json:"knn"`
		Size   int `json:"size"`
		Source struct {
			Excludes []string `json:"excludes"`
		} `json:"_source"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	k := got.KNN
	if k.Field != c.cfg.VectorField || !reflect.DeepEqual(k.QueryVector, v) || k.K != 5 || got.Size != 5 ||
		k.NumCandidates != max(5*c.cfg.NumCandidatesFactor, minNumCandidates) || k.Similarity != sim ||
		!reflect.DeepEqual(got.Source.Excludes, []string{c.cfg.VectorField}) {
		t.Fatalf("body %s", b)
	}
	wantFilter := []map[string]any{
		{"term": map[string]any{"metadata.a.b": "true"}},
		{"terms": map[string]any{"metadata.n": []any{"1", "2.5", "x"}}},
		{"term": map[string]any{"metadata.tag": "cat"}},
	}
	if !reflect.DeepEqual(k.Filter, wantFilter) {
		t.Fatalf("filter\n got %v\nwant %v", k.Filter, wantFilter)
	}
}

func TestKNNBodyRefusesBadQueries(t *testing.T) {
	c := newTestClient(t, testConfig("http://127.0.0.1:9"))
	v := unitVector(rand.New(rand.NewPCG(9, 10)), testProv.Dims)
	two := float32(2)
	for name, q := range map[string]KNNQuery{
		"k zero":         {Vector: v, K: 0},
		"k huge":         {Vector: v, K: maxK + 1},
		"nc below k":     {Vector: v, K: 10, NumCandidates: 5},
		"wrong dims":     {Vector: v[:2], K: 1},
		"similarity":     {Vector: v, K: 1, Similarity: &two},
		"wildcard key":   {Vector: v, K: 1, Filter: map[string]any{"ta*": "x"}},
		"quote key":      {Vector: v, K: 1, Filter: map[string]any{`a"b`: "x"}},
		"empty segment":  {Vector: v, K: 1, Filter: map[string]any{"a..b": "x"}},
		"leading dot":    {Vector: v, K: 1, Filter: map[string]any{".a": "x"}},
		"object value":   {Vector: v, K: 1, Filter: map[string]any{"a": map[string]any{"b": 1}}},
		"null value":     {Vector: v, K: 1, Filter: map[string]any{"a": nil}},
		"empty list":     {Vector: v, K: 1, Filter: map[string]any{"a": []any{}}},
		"nested list":    {Vector: v, K: 1, Filter: map[string]any{"a": []any{[]any{1}}}},
		"too many value": {Vector: v, K: 1, Filter: map[string]any{"a": make([]string, maxFilterValues+1)}},
	} {
		if _, _, err := c.knnBody(q); apierr.KindOf(err) != apierr.InvalidArgument {
			t.Errorf("%s: want InvalidArgument, got %v", name, err)
		}
	}
	// Unicode keys are fine.
	if _, _, err := c.knnBody(KNNQuery{Vector: v, K: 1, Filter: map[string]any{"标签": "猫", "a-b_c.d": 1}}); err != nil {
		t.Fatal(err)
	}
}

// --- against a fake Elasticsearch --------------------------------------------

func TestIndexCreatedThenExists(t *testing.T) {
	var calls int
	var refreshes atomic.Int32 // read by the test goroutine
	srv := fakeES(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/"+ConcreteIndexName("test-images", testProv)+"/_refresh" {
			refreshes.Add(1)
			_, _ = io.WriteString(w, `{"_shards":{"total":1,"successful":1,"failed":0}}`)
			return
		}
		calls++
		// No refresh parameter: Elasticsearch's wait_for would wait for the
		// scheduled refresh; the client refreshes explicitly instead.
		if r.Method != http.MethodPut || r.URL.Path != "/test-images/_create/img1" ||
			r.URL.Query().Has("refresh") || r.URL.Query().Get("require_alias") != "true" {
			t.Errorf("unexpected request %s %s", r.Method, r.URL)
		}
		var src map[string]any
		if err := json.NewDecoder(r.Body).Decode(&src); err != nil || src["model"] != testProv.Model {
			t.Errorf("body: %v %v", src, err)
		}
		if calls == 1 {
			w.WriteHeader(201)
			_, _ = io.WriteString(w, `{"result":"created"}`)
			return
		}
		w.WriteHeader(409)
		_, _ = io.WriteString(w, `{"error":{"type":"version_conflict_engine_exception","reason":"[img1]: version conflict, document already exists"},"status":409}`)
	})
	c := newTestClient(t, testConfig(srv.URL))
	d := Doc{ID: "img1", Vector: unitVector(rand.New(rand.NewPCG(1, 1)), testProv.Dims)}
	for i, want := range []Result{Created, Exists} {
		got, err := c.Index(context.Background(), d, "")
		if err != nil || got != want {
			t.Fatalf("want %s, got %s %v", want, got, err)
		}
		// Exists waits for a refresh too: the existing document may be
		// another writer's, still unrefreshed.
		if n := refreshes.Load(); n != int32(i+1) {
			t.Fatalf("after %s: %d refreshes, want %d", want, n, i+1)
		}
	}
}

func TestWritesNeedEnsureIndex(t *testing.T) {
	c, err := New(testConfig("http://127.0.0.1:9"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Index(context.Background(), Doc{ID: "a"}, "")
	wantKind(t, err, apierr.Internal, CodeNotInitialised)
	_, err = c.Bulk(context.Background(), []Doc{{ID: "a"}}, "")
	wantKind(t, err, apierr.Internal, CodeNotInitialised)
}

func TestBulkPerItemResults(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	docs := []Doc{
		{ID: "a", Vector: unitVector(rng, testProv.Dims)},
		{ID: "bad", Vector: []float32{1}}, // refused locally, never sent
		{ID: "b", Vector: unitVector(rng, testProv.Dims)},
		{ID: "c", Vector: unitVector(rng, testProv.Dims)},
		{ID: "d", Vector: unitVector(rng, testProv.Dims)},
	}
	// What Elasticsearch answers for the sent items, in order.
	answers := []string{
		`{"create":{"status":201}}`,
		`{"create":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}}`,
		`{"create":{"status":400,"error":{"type":"document_parsing_exception","reason":"metadata too deep"}}}`,
		`{"create":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}}`,
	}
	srv := fakeES(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/test-images/_bulk" || r.URL.Query().Has("refresh") ||
			!strings.Contains(r.URL.Query().Get("filter_path"), "items.*.status") {
			t.Errorf("unexpected request %s", r.URL)
		}
		var ids []string
		sc := bufio.NewScanner(r.Body)
		sc.Buffer(nil, 1<<20)
		for line := 0; sc.Scan(); line++ {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Errorf("line %d not JSON: %v", line, err)
			}
			if line%2 == 0 {
				ids = append(ids, m["create"].(map[string]any)["_id"].(string))
			} else if len(m["image_embedding"].([]any)) != testProv.Dims {
				t.Errorf("line %d: bad vector", line)
			}
		}
		if !reflect.DeepEqual(ids, []string{"a", "b", "c", "d"}) {
			t.Errorf("sent ids %v", ids)
		}
		_, _ = io.WriteString(w, `{"errors":true,"items":[`+strings.Join(answers, ",")+`]}`)
	})
	c := newTestClient(t, testConfig(srv.URL))
	items, err := c.Bulk(context.Background(), docs, RefreshFalse)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		r    Result
		kind apierr.Kind
	}{{Created, 0}, {Failed, apierr.InvalidArgument}, {Exists, 0}, {Failed, apierr.InvalidArgument}, {Failed, apierr.Overloaded}}
	for i, w := range want {
		if items[i].ID != docs[i].ID || items[i].Result != w.r || (w.r == Failed) != (items[i].Err != nil) ||
			(items[i].Err != nil && apierr.KindOf(items[i].Err) != w.kind) {
			t.Errorf("item %d: %v", i, items[i])
		}
	}
	if e := apierr.As(items[4].Err); e.RetryAfter <= 0 {
		t.Errorf("429 item without retry hint")
	}
	var m dto.Metric
	_ = c.metrics.items.WithLabelValues("error").Write(&m)
	if got := m.GetCounter().GetValue(); got != 3 {
		t.Errorf("error items metric %v", got)
	}
}

func TestStatusMapping(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		kind   apierr.Kind
		code   string
	}{
		{429, `{"error":{"type":"es_rejected_execution_exception","reason":"rejected"},"status":429}`, apierr.Overloaded, CodeOverloaded},
		{503, `{"error":{"type":"cluster_block_exception","reason":"blocked"},"status":503}`, apierr.Unavailable, CodeUnavailable},
		{500, `{"error":{"type":"null_pointer_exception","reason":"oops"},"status":500}`, apierr.BadGateway, CodeBadGateway},
		{502, ``, apierr.BadGateway, CodeBadGateway},
		{504, ``, apierr.Timeout, CodeTimeout},
		{404, `{"error":{"type":"index_not_found_exception","reason":"no such index [test-images]"},"status":404}`, apierr.NotFound, CodeIndexNotFound},
		{401, `{"error":{"type":"security_exception","reason":"missing authentication credentials"},"status":401}`, apierr.BadGateway, CodeCredentials},
		{403, `{"error":{"type":"security_exception","reason":"action [indices:data/read/search] is unauthorized"},"status":403}`, apierr.BadGateway, CodeCredentials},
		{413, ``, apierr.TooLarge, CodeTooLarge},
		{400, `{"error":{"type":"search_phase_execution_exception","reason":"all shards failed","root_cause":[{"type":"illegal_argument_exception","reason":"bad knn"}]},"status":400}`, apierr.InvalidArgument, CodeRejected},
	} {
		srv := fakeES(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
			_, _ = io.WriteString(w, tc.body)
		})
		c := newTestClient(t, testConfig(srv.URL))
		_, err := c.KNN(context.Background(), KNNQuery{Vector: unitVector(rand.New(rand.NewPCG(1, 2)), testProv.Dims), K: 3})
		e := wantKind(t, err, tc.kind, tc.code)
		if (tc.kind == apierr.Overloaded || tc.kind == apierr.Unavailable) && e.RetryAfter <= 0 {
			t.Errorf("%d: no retry hint", tc.status)
		}
		if tc.status == 400 && !strings.Contains(e.Message, "bad knn") {
			t.Errorf("400 message hides the root cause: %s", e.Message)
		}
	}
}

// TestUntrustedCertificate: an HTTPS node whose certificate the configured
// CA (here: the system roots) did not sign is a configuration error naming
// elasticsearch.ca_cert, not "unreachable".
func TestUntrustedCertificate(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("request reached a server the client must not trust: %s", r.URL)
	}))
	t.Cleanup(srv.Close)
	c := newTestClient(t, testConfig(srv.URL))
	_, err := c.KNN(context.Background(), KNNQuery{Vector: unitVector(rand.New(rand.NewPCG(1, 2)), testProv.Dims), K: 3})
	e := wantKind(t, err, apierr.BadGateway, CodeTLS)
	if !strings.Contains(e.Message, "elasticsearch.ca_cert") || !strings.Contains(err.Error(), "x509") {
		t.Errorf("TLS error does not name the setting and the cause: %v", err)
	}
}

func TestGetAndDeleteNotFound(t *testing.T) {
	srv := fakeES(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("_source_excludes") != "image_embedding" && r.Method == http.MethodGet {
			t.Errorf("get without vector exclusion: %s", r.URL)
		}
		w.WriteHeader(404)
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, `{"_id":"nope","found":false}`)
		} else {
			_, _ = io.WriteString(w, `{"result":"not_found"}`)
		}
	})
	c := newTestClient(t, testConfig(srv.URL))
	_, err := c.Get(context.Background(), "nope")
	wantKind(t, err, apierr.NotFound, CodeDocNotFound)
	wantKind(t, c.Delete(context.Background(), "nope", ""), apierr.NotFound, CodeDocNotFound)
}

func TestGetDecodesSource(t *testing.T) {
	srv := fakeES(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"_id":"img","found":true,"_source":{"model":"clip_image","model_version":"1","dims":8,
			"width":3,"created_at":"2024-05-06T07:08:09.123Z","metadata":{"big":9007199254740993,"tag":"cat"}}}`)
	})
	c := newTestClient(t, testConfig(srv.URL))
	d, err := c.Get(context.Background(), "img")
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != "img" || d.Width != 3 || d.Model != "clip_image" || d.Vector != nil ||
		!d.CreatedAt.Equal(time.Date(2024, 5, 6, 7, 8, 9, 123e6, time.UTC)) ||
		d.Metadata["big"] != json.Number("9007199254740993") || d.Metadata["tag"] != "cat" {
		t.Fatalf("%+v", d)
	}
}

func TestNotElasticsearch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"status":"green"}`) // no X-Elastic-Product
	}))
	defer srv.Close()
	c := newTestClient(t, testConfig(srv.URL))
	wantKind(t, c.Ping(context.Background()), apierr.BadGateway, CodeNotElasticsearch)
}

func TestConnectionRefusedIsUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	_ = ln.Close()
	cfg := testConfig(addr)
	cfg.MaxRetries = 2 // retries must not change the verdict
	c := newTestClient(t, cfg)
	e := wantKind(t, c.Ping(context.Background()), apierr.Unavailable, CodeUnavailable)
	if e.RetryAfter <= 0 {
		t.Error("no retry hint")
	}
	_, err = c.Index(context.Background(), Doc{ID: "a", Vector: unitVector(rand.New(rand.NewPCG(1, 3)), testProv.Dims)}, "")
	wantKind(t, err, apierr.Unavailable, CodeUnavailable)
}

func TestDeadlineAndCancel(t *testing.T) {
	release := make(chan struct{})
	srv := fakeES(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	c := newTestClient(t, testConfig(srv.URL))
	q := KNNQuery{Vector: unitVector(rand.New(rand.NewPCG(2, 3)), testProv.Dims), K: 1}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.KNN(ctx, q)
	wantKind(t, err, apierr.Timeout, CodeTimeout)

	ctx, cancel = context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	_, err = c.KNN(ctx, q)
	wantKind(t, err, apierr.Canceled, CodeCanceled)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cause not kept: %v", err)
	}
}

func TestReadyMapsHealth(t *testing.T) {
	status := "yellow"
	code := 200
	srv := fakeES(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_cluster/health/test-images" {
			t.Errorf("path %s", r.URL.Path)
		}
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"status": status})
	})
	c := newTestClient(t, testConfig(srv.URL))
	if err := c.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	status = "red"
	wantKind(t, c.Ready(context.Background()), apierr.Unavailable, CodeUnavailable)
	status, code = "red", 408 // missing index
	wantKind(t, c.Ready(context.Background()), apierr.Unavailable, CodeUnavailable)
}

func TestEnsureIndexCreatesWithAlias(t *testing.T) {
	var created []byte
	srv := fakeES(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/test-images":
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"error":{"type":"index_not_found_exception","reason":"no such index"},"status":404}`)
		case r.Method == http.MethodPut && r.URL.Path == "/"+ConcreteIndexName("test-images", testProv):
			created, _ = io.ReadAll(r.Body)
			_, _ = io.WriteString(w, `{"acknowledged":true,"shards_acknowledged":true}`)
		default:
			t.Errorf("unexpected %s %s", r.Method, r.URL)
			w.WriteHeader(500)
		}
	})
	cfg := testConfig(srv.URL)
	c, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.EnsureIndex(context.Background(), testProv)
	if err != nil || !info.Created {
		t.Fatalf("%+v %v", info, err)
	}
	var body struct {
		Aliases map[string]struct {
			IsWriteIndex bool `json:"is_write_index"`
		} `json:"aliases"`
		Mappings struct {
			Dynamic    string                    `json:"dynamic"`
			Properties map[string]map[string]any `json:"properties"`
		} `json:"mappings"`
	}
	if err := json.Unmarshal(created, &body); err != nil {
		t.Fatal(err)
	}
	vf := body.Mappings.Properties["image_embedding"]
	if !body.Aliases["test-images"].IsWriteIndex || body.Mappings.Dynamic != "strict" ||
		vf["type"] != "dense_vector" || vf["dims"] != float64(testProv.Dims) || vf["similarity"] != cfg.Similarity ||
		body.Mappings.Properties["metadata"]["type"] != "flattened" {
		t.Fatalf("create body %s", created)
	}
	if _, err := c.Index(context.Background(), Doc{ID: "x", Vector: []float32{1}}, ""); apierr.KindOf(err) != apierr.InvalidArgument {
		t.Fatalf("after EnsureIndex writes must be allowed (and validated): %v", err)
	}
}
