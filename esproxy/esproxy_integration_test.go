//go:build integration

// Integration tests against the REAL local Elasticsearch
// (deploy/local/elasticsearch.sh up; TUSOU_ES_URL overrides the address).
// Each test works under its own alias and deletes every index it created.
package esproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/internal/testutil"
)

const itDims = 512

var itProv = Provenance{Model: "clip_image", Version: "it-1", Dims: itDims}

func esURL() string { return testutil.ESURL() }

// TestMain waits (bounded) for the node so a just-started stack is not a failure.
func TestMain(m *testing.M) {
	deadline := time.Now().Add(90 * time.Second)
	for {
		res, err := http.Get(esURL() + "/_cluster/health?wait_for_status=yellow&timeout=5s")
		if err == nil {
			_ = res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "elasticsearch at %s is not up (start it: deploy/local/elasticsearch.sh up): %v\n", esURL(), err)
			os.Exit(1)
		}
		time.Sleep(time.Second)
	}
	os.Exit(m.Run())
}

var aliasUnsafe = regexp.MustCompile(`[^a-z0-9]+`)

// itConfig is a config for a fresh alias unique to this test and run.
func itConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.Addresses = []string{esURL()}
	cfg.Index = fmt.Sprintf("tusou-it-%s-%x", strings.Trim(aliasUnsafe.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-"),
		time.Now().UnixNano()&0xffffffff)
	if len(cfg.Index) > 90 {
		cfg.Index = cfg.Index[len(cfg.Index)-90:]
		cfg.Index = "t" + strings.TrimLeft(cfg.Index, "-_+.")
	}
	cfg.Dims = itDims
	cfg.Replicas = 0 // one node: green
	return cfg
}

// itClient builds a client and registers cleanup of everything under the
// config's alias prefix.
func itClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deleteIndices(t, c, cfg.Index+"-*")
		_ = c.Close(context.Background())
	})
	return c
}

// deleteIndices deletes indices matching pattern by name (wildcard deletes
// are refused by action.destructive_requires_name).
func deleteIndices(t *testing.T, c *Client, pattern string) {
	t.Helper()
	ctx := context.Background()
	res, err := esapi.IndicesGetRequest{Index: []string{pattern}, FilterPath: []string{"*.settings.index.provided_name"}}.Do(ctx, c.es)
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	var got map[string]any
	_ = json.NewDecoder(res.Body).Decode(&got)
	_ = res.Body.Close()
	var names []string
	for n := range got {
		names = append(names, n)
	}
	if len(names) == 0 {
		return
	}
	res, err = esapi.IndicesDeleteRequest{Index: names}.Do(ctx, c.es)
	if err != nil || res.IsError() {
		t.Errorf("cleanup of %v failed: %v %v", names, err, res)
	}
	if res != nil {
		_ = res.Body.Close()
	}
}

func ensure(t *testing.T, c *Client, p Provenance) IndexInfo {
	t.Helper()
	info, err := c.EnsureIndex(context.Background(), p)
	if err != nil {
		t.Fatalf("EnsureIndex: %v", err)
	}
	return info
}

// count returns the number of documents behind the alias after a refresh.
func count(t *testing.T, c *Client) int {
	t.Helper()
	ctx := context.Background()
	if res, err := (esapi.IndicesRefreshRequest{Index: []string{c.cfg.Index}}).Do(ctx, c.es); err == nil {
		_ = res.Body.Close()
	}
	res, err := esapi.CountRequest{Index: []string{c.cfg.Index}}.Do(ctx, c.es)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out struct {
		Count int `json:"count"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out.Count
}

func dot(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

// near returns unit vectors whose cosines to base spread over (0, 1): base
// plus growing amounts of random noise.
func near(rng *rand.Rand, base []float32, n int) [][]float32 {
	out := make([][]float32, n)
	for i := range out {
		noise := unitVector(rng, len(base))
		a := float32(i+1) / float32(n) * 3 // noise weight 0..3
		v := make([]float32, len(base))
		var sq float64
		for j := range v {
			v[j] = base[j] + a*noise[j]
			sq += float64(v[j]) * float64(v[j])
		}
		norm := float32(math.Sqrt(sq))
		for j := range v {
			v[j] /= norm
		}
		out[i] = v
	}
	return out
}

func TestIntegrationEnsureIndex(t *testing.T) {
	cfg := itConfig(t)
	c := itClient(t, cfg)
	first := ensure(t, c, itProv)
	if !first.Created || first.WriteIndex != ConcreteIndexName(cfg.Index, itProv) {
		t.Fatalf("first call: %+v", first)
	}
	second := ensure(t, c, itProv)
	if second.Created || second.WriteIndex != first.WriteIndex {
		t.Fatalf("second call: %+v", second)
	}

	// The mapping is what we meant: strict, flattened metadata, provenance in _meta.
	res, err := esapi.IndicesGetMappingRequest{Index: []string{cfg.Index}}.Do(context.Background(), c.es)
	if err != nil {
		t.Fatal(err)
	}
	var mapping map[string]struct {
		Mappings struct {
			Dynamic    string                    `json:"dynamic"`
			Meta       map[string]Provenance     `json:"_meta"`
			Properties map[string]map[string]any `json:"properties"`
		} `json:"mappings"`
	}
	_ = json.NewDecoder(res.Body).Decode(&mapping)
	_ = res.Body.Close()
	m := mapping[first.WriteIndex].Mappings
	if m.Dynamic != "strict" || !reflect.DeepEqual(m.Meta[metaKey], itProv) || m.Properties["metadata"]["type"] != "flattened" ||
		m.Properties[cfg.VectorField]["similarity"] != cfg.Similarity ||
		m.Properties[cfg.VectorField]["index_options"].(map[string]any)["type"] != cfg.IndexOptions.Type {
		t.Fatalf("mapping: %+v", m)
	}

	// Another model, version or width on the same alias is refused, naming
	// the index and both provenances.
	for _, p := range []Provenance{
		{Model: "other_model", Version: itProv.Version, Dims: itDims},
		{Model: itProv.Model, Version: "it-2", Dims: itDims},
		{Model: itProv.Model, Version: itProv.Version, Dims: 768},
	} {
		ocfg := cfg
		ocfg.Dims = p.Dims
		oc, err := New(ocfg, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = oc.EnsureIndex(context.Background(), p)
		e := wantKind(t, err, apierr.Conflict, CodeIndexMismatch)
		for _, s := range []string{first.WriteIndex, p.String(), itProv.String()} {
			if !strings.Contains(e.Message, s) {
				t.Errorf("refusal for %v does not mention %q: %s", p, s, e.Message)
			}
		}
		// And a refused client cannot write.
		_, err = oc.Index(context.Background(), Doc{ID: "x", Vector: unitVector(rand.New(rand.NewPCG(1, 1)), p.Dims)}, "")
		wantKind(t, err, apierr.Internal, CodeNotInitialised)
	}

	if err := c.Ready(context.Background()); err != nil {
		t.Fatalf("Ready on a green index: %v", err)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func TestIntegrationReadyMissingAlias(t *testing.T) {
	c := itClient(t, itConfig(t))
	wantKind(t, c.Ready(context.Background()), apierr.Unavailable, CodeUnavailable)
}

func TestIntegrationIndexIsIdempotent(t *testing.T) {
	c := itClient(t, itConfig(t))
	ensure(t, c, itProv)
	ctx := context.Background()
	v := unitVector(rand.New(rand.NewPCG(21, 22)), itDims)
	d := Doc{ID: "sha-of-bytes", Vector: v, ContentType: "image/jpeg", Width: 640, Height: 480, Bytes: 12345,
		SHA256: "sha-of-bytes", Metadata: map[string]any{"tag": "first"}}
	r, err := c.Index(ctx, d, "")
	if err != nil || r != Created {
		t.Fatalf("first: %s %v", r, err)
	}
	d.Metadata = map[string]any{"tag": "second"}
	r, err = c.Index(ctx, d, "")
	if err != nil || r != Exists {
		t.Fatalf("second: %s %v", r, err)
	}
	if n := count(t, c); n != 1 {
		t.Fatalf("count %d after re-ingest", n)
	}
	got, err := c.Get(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Metadata["tag"] != "first" || got.Vector != nil || got.Model != itProv.Model ||
		got.ModelVersion != itProv.Version || got.Dims != itDims || got.Width != 640 || got.CreatedAt.IsZero() {
		t.Fatalf("get after re-ingest: %+v", got)
	}

	// Delete: gone for Get and (refresh wait_for) for search.
	if err := c.Delete(ctx, d.ID, ""); err != nil {
		t.Fatal(err)
	}
	_, err = c.Get(ctx, d.ID)
	wantKind(t, err, apierr.NotFound, CodeDocNotFound)
	wantKind(t, c.Delete(ctx, d.ID, ""), apierr.NotFound, CodeDocNotFound)
	hits, err := c.KNN(ctx, KNNQuery{Vector: v, K: 1})
	if err != nil || len(hits) != 0 {
		t.Fatalf("deleted doc still found: %v %v", hits, err)
	}
}

func TestIntegrationWaitForMakesSearchable(t *testing.T) {
	c := itClient(t, itConfig(t))
	ensure(t, c, itProv)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(23, 24))
	// Each ingest is searched right after it returns, no sleeping or polling.
	for i := range 5 {
		v := unitVector(rng, itDims)
		id := fmt.Sprintf("doc-%d", i)
		if r, err := c.Index(ctx, Doc{ID: id, Vector: v}, ""); err != nil || r != Created {
			t.Fatalf("%s: %s %v", id, r, err)
		}
		hits, err := c.KNN(ctx, KNNQuery{Vector: v, K: 1})
		if err != nil || len(hits) != 1 || hits[0].ID != id {
			t.Fatalf("%s not searchable on success: %+v %v", id, hits, err)
		}
	}
}

func TestIntegrationBulk(t *testing.T) {
	c := itClient(t, itConfig(t))
	ensure(t, c, itProv)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(25, 26))
	if r, err := c.Index(ctx, Doc{ID: "pre", Vector: unitVector(rng, itDims)}, ""); err != nil || r != Created {
		t.Fatal(r, err)
	}
	deep := map[string]any{"leaf": "x"}
	for range 25 { // flattened's depth_limit is 20
		deep = map[string]any{"d": deep}
	}
	docs := []Doc{
		{ID: "a", Vector: unitVector(rng, itDims), Metadata: map[string]any{"k": 1}},
		{ID: "pre", Vector: unitVector(rng, itDims)},                  // already stored
		{ID: "short", Vector: unitVector(rng, 3)},                     // refused before sending
		{ID: "b", Vector: unitVector(rng, itDims)},                    //
		{ID: "a", Vector: unitVector(rng, itDims)},                    // duplicate within the batch
		{ID: "deep", Vector: unitVector(rng, itDims), Metadata: deep}, // refused by Elasticsearch
	}
	items, err := c.Bulk(ctx, docs, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []Result{Created, Exists, Failed, Created, Exists, Failed}
	for i := range want {
		if items[i].ID != docs[i].ID || items[i].Result != want[i] || (want[i] == Failed) != (items[i].Err != nil) {
			t.Errorf("item %d: %v, want %s", i, items[i], want[i])
		}
	}
	wantKind(t, items[2].Err, apierr.InvalidArgument, CodeInvalidDoc)
	e := wantKind(t, items[5].Err, apierr.InvalidArgument, CodeRejected)
	t.Logf("elasticsearch's refusal of the deep document: %s", e.Message)
	if n := count(t, c); n != 3 { // pre, a, b
		t.Fatalf("count %d, want 3", n)
	}
	// Searchable on success with the default refresh, like Index.
	hits, err := c.KNN(ctx, KNNQuery{Vector: docs[3].Vector, K: 1})
	if err != nil || len(hits) != 1 || hits[0].ID != "b" {
		t.Fatalf("bulk doc not searchable: %+v %v", hits, err)
	}
	// An all-invalid batch sends nothing and fails per item.
	items, err = c.Bulk(ctx, []Doc{{ID: "", Vector: docs[0].Vector}}, RefreshFalse)
	if err != nil || items[0].Result != Failed {
		t.Fatalf("%v %v", items, err)
	}
}

func TestIntegrationKNN(t *testing.T) {
	c := itClient(t, itConfig(t))
	ensure(t, c, itProv)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(27, 28))
	base := unitVector(rng, itDims)
	vecs := append([][]float32{base}, near(rng, base, 59)...)
	docs := make([]Doc, len(vecs))
	for i, v := range vecs {
		docs[i] = Doc{ID: fmt.Sprintf("img-%02d", i), Vector: v,
			Metadata: map[string]any{"group": i % 3, "tag": fmt.Sprintf("t%d", i%5), "owner": map[string]any{"team": []string{"x", "y"}[i%2]}}}
	}
	items, err := c.Bulk(ctx, docs, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Result != Created {
			t.Fatalf("bulk: %v", it)
		}
	}

	// Every stored vector finds itself first with score ~1 (int8
	// quantisation perturbs the score slightly; the exact value is 1).
	const scoreTol = 0.01
	for _, i := range []int{0, 7, 31, 59} {
		hits, err := c.KNN(ctx, KNNQuery{Vector: vecs[i], K: 5})
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) != 5 || hits[0].ID != docs[i].ID || math.Abs(hits[0].Score-1) > scoreTol || math.Abs(hits[0].Similarity-1) > 2*scoreTol {
			t.Fatalf("query %d: top hit %+v", i, hits[0])
		}
		for j := 1; j < len(hits); j++ {
			if hits[j].Score > hits[j-1].Score {
				t.Fatalf("hits not sorted by score: %+v", hits)
			}
		}
	}

	// Scores agree with the exact cosine computed here.
	hits, err := c.KNN(ctx, KNNQuery{Vector: base, K: 20})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]int{}
	for i, d := range docs {
		byID[d.ID] = i
	}
	for _, h := range hits {
		if exact := dot(base, vecs[byID[h.ID]]); math.Abs(h.Similarity-exact) > 2*scoreTol {
			t.Errorf("%s: similarity %.4f, exact cosine %.4f", h.ID, h.Similarity, exact)
		}
	}

	// Filters: scalar (term), list (terms), nested key; the query's own
	// document (group 0) is excluded by group=1.
	for name, tc := range map[string]struct {
		filter map[string]any
		match  func(i int) bool
	}{
		"term":   {map[string]any{"group": 1}, func(i int) bool { return i%3 == 1 }},
		"terms":  {map[string]any{"tag": []string{"t1", "t3"}}, func(i int) bool { return i%5 == 1 || i%5 == 3 }},
		"nested": {map[string]any{"owner.team": "y", "group": 2}, func(i int) bool { return i%2 == 1 && i%3 == 2 }},
	} {
		want := 0
		for i := range docs {
			if tc.match(i) {
				want++
			}
		}
		hits, err := c.KNN(ctx, KNNQuery{Vector: base, K: len(docs), Filter: tc.filter})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(hits) != want {
			t.Errorf("%s: %d hits, %d documents match", name, len(hits), want)
		}
		for _, h := range hits {
			if !tc.match(byID[h.ID]) {
				t.Errorf("%s: %s does not match the filter (metadata %v)", name, h.ID, h.Doc.Metadata)
			}
		}
	}
	// Metadata numbers come back as the JSON numbers they were.
	if hits[0].Doc.Metadata["group"] != json.Number("0") {
		t.Errorf("metadata: %#v", hits[0].Doc.Metadata)
	}

	// Similarity threshold: exactly the documents whose exact cosine is
	// clearly above the threshold, none clearly below.
	exact := make([]float64, len(vecs))
	for i, v := range vecs {
		exact[i] = dot(base, v)
	}
	sorted := append([]float64(nil), exact...)
	sort.Float64s(sorted)
	thr := float32(sorted[len(sorted)/2])
	hits, err = c.KNN(ctx, KNNQuery{Vector: base, K: len(docs), Similarity: &thr})
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]bool{}
	for _, h := range hits {
		got[byID[h.ID]] = true
	}
	for i, e := range exact {
		if e > float64(thr)+scoreTol && !got[i] {
			t.Errorf("doc %d (cosine %.4f) missing above threshold %.4f", i, e, thr)
		}
		if e < float64(thr)-scoreTol && got[i] {
			t.Errorf("doc %d (cosine %.4f) returned below threshold %.4f", i, e, thr)
		}
	}
	if len(hits) == 0 || len(hits) == len(docs) {
		t.Errorf("threshold did not cut: %d of %d", len(hits), len(docs))
	}
}

// recorder is a reverse proxy to the real node that keeps response bodies,
// to prove what Elasticsearch actually sent back to esproxy.
type recorder struct {
	mu     sync.Mutex
	bodies map[string][]string // "METHOD path" -> bodies
}

func (r *recorder) start(t *testing.T) string {
	target, _ := url.Parse(esURL())
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(res *http.Response) error {
		b, err := io.ReadAll(res.Body)
		if err != nil {
			return err
		}
		_ = res.Body.Close()
		res.Body = io.NopCloser(bytes.NewReader(b))
		r.mu.Lock()
		key := res.Request.Method + " " + res.Request.URL.Path
		r.bodies[key] = append(r.bodies[key], string(b))
		r.mu.Unlock()
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestIntegrationVectorNeverReturned(t *testing.T) {
	rec := &recorder{bodies: map[string][]string{}}
	cfg := itConfig(t)
	cfg.Addresses = []string{rec.start(t)}
	c := itClient(t, cfg)
	info := ensure(t, c, itProv)
	ctx := context.Background()
	v := unitVector(rand.New(rand.NewPCG(29, 30)), itDims)
	if _, err := c.Index(ctx, Doc{ID: "v1", Vector: v}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "v1"); err != nil {
		t.Fatal(err)
	}
	hits, err := c.KNN(ctx, KNNQuery{Vector: v, K: 1})
	if err != nil || len(hits) != 1 {
		t.Fatal(hits, err)
	}
	var reads int
	for key, bodies := range rec.bodies {
		for _, b := range bodies {
			if strings.Contains(b, cfg.VectorField) && !strings.HasPrefix(key, "GET /"+cfg.Index) { // index GET shows the mapping
				t.Errorf("%s returned the vector field: %.200s", key, b)
			}
			if strings.Contains(key, "_doc") || strings.Contains(key, "_search") {
				reads++
			}
		}
	}
	if reads < 2 {
		t.Fatalf("recorder saw %d reads: %v", reads, rec.bodies)
	}
	// The vector is still in the stored _source (reindexable) by default.
	res, err := esapi.GetRequest{Index: info.WriteIndex, DocumentID: "v1"}.Do(ctx, c.es)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if !strings.Contains(string(b), cfg.VectorField) {
		t.Errorf("default mapping should keep the vector in _source: %.200s", b)
	}
}

// TestIntegrationDotProductExcludedSource covers the other similarity and
// the disk-saving mapping option.
func TestIntegrationDotProductExcludedSource(t *testing.T) {
	cfg := itConfig(t)
	cfg.Similarity = "dot_product"
	cfg.ExcludeVectorFromSource = true
	c := itClient(t, cfg)
	info := ensure(t, c, itProv)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(31, 32))
	vecs := [][]float32{unitVector(rng, itDims), unitVector(rng, itDims), unitVector(rng, itDims)}
	for i, v := range vecs {
		if _, err := c.Index(ctx, Doc{ID: fmt.Sprint(i), Vector: v}, ""); err != nil {
			t.Fatal(err)
		}
	}
	hits, err := c.KNN(ctx, KNNQuery{Vector: vecs[1], K: 3})
	if err != nil || hits[0].ID != "1" || math.Abs(hits[0].Score-1) > 0.01 {
		t.Fatalf("%+v %v", hits, err)
	}
	res, err := esapi.GetRequest{Index: info.WriteIndex, DocumentID: "1"}.Do(ctx, c.es)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if strings.Contains(string(b), cfg.VectorField) {
		t.Errorf("vector stored in _source despite exclude_vector_from_source: %.200s", b)
	}
}

func TestIntegrationElasticsearchDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	_ = ln.Close()
	cfg := itConfig(t)
	cfg.Addresses = []string{closed}
	c, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = c.EnsureIndex(ctx, itProv)
	wantKind(t, err, apierr.Unavailable, CodeUnavailable)
	wantKind(t, c.Ping(ctx), apierr.Unavailable, CodeUnavailable)
	_, err = c.KNN(ctx, KNNQuery{Vector: unitVector(rand.New(rand.NewPCG(1, 1)), itDims), K: 1})
	e := wantKind(t, err, apierr.Unavailable, CodeUnavailable)
	if e.RetryAfter <= 0 {
		t.Errorf("no Retry-After hint")
	}
}

func TestIntegrationEnsureIndexConcurrentStarts(t *testing.T) {
	cfg := itConfig(t)
	itClient(t, cfg) // for cleanup
	// Several gateways starting at once: one creates, the others accept it.
	const n = 4
	var wg sync.WaitGroup
	infos := make([]IndexInfo, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			oc, err := New(cfg, nil, nil)
			if err != nil {
				errs[i] = err
				return
			}
			infos[i], errs[i] = oc.EnsureIndex(context.Background(), itProv)
		}()
	}
	wg.Wait()
	created := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("gateway %d: %v", i, errs[i])
		}
		if infos[i].Created {
			created++
		}
		if infos[i].WriteIndex != ConcreteIndexName(cfg.Index, itProv) {
			t.Errorf("gateway %d: %+v", i, infos[i])
		}
	}
	if created != 1 {
		t.Errorf("%d gateways report creating the index", created)
	}
}

func TestIntegrationRefusesIndexInPlaceOfAlias(t *testing.T) {
	cfg := itConfig(t)
	c := itClient(t, cfg)
	ctx := context.Background()
	res, err := esapi.IndicesCreateRequest{Index: cfg.Index}.Do(ctx, c.es)
	if err != nil || res.IsError() {
		t.Fatal(err, res)
	}
	_ = res.Body.Close()
	t.Cleanup(func() { deleteIndices(t, c, cfg.Index) })
	_, err = c.EnsureIndex(ctx, itProv)
	e := wantKind(t, err, apierr.Conflict, CodeIndexMismatch)
	if !strings.Contains(e.Message, "not an alias") || !strings.Contains(e.Message, "no tusou provenance") {
		t.Errorf("message: %s", e.Message)
	}
}
