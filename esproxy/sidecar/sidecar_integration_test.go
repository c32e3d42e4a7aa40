//go:build integration

// Integration tests of the sidecar on the real local stack (make up):
// Elasticsearch on 127.0.0.1:9200 and Triton on 127.0.0.1:8001, driven by
// the official go-elasticsearch v8 client and, as a subprocess, the official
// Python client (pytests/). The package is external (sidecar_test) so it may
// import app, which wires the sidecar in.
package sidecar_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esapi"
	"github.com/elastic/go-elasticsearch/v8/esutil"
	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/embed"
	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/esproxy/sidecar"
	"github.com/tusou/tusou/internal/testutil"
	"github.com/tusou/tusou/preprocess"
	"github.com/tusou/tusou/tokenizer"
	"github.com/tusou/tusou/triton"
	"go.uber.org/zap"
)

var esURL = testutil.ESURL()

// stack is a sidecar on a random port in front of the real Elasticsearch,
// embedding with the real Triton.
type stack struct {
	url    string
	images *embed.Images
	texts  *embed.Texts
	embeds *embedCount // embeddings the sidecar asked for
}

// tokenizerPath is the tokenizer the local stack's clip_text expects: the
// exported real one, else the tiny test one (as app.resolveTokenizer picks).
func tokenizerPath() string {
	for _, p := range []string{"model_repository/clip_text/tokenizer.json", "model_repository/tiny/clip_text/tokenizer.json"} {
		if _, err := os.Stat(filepath.Join(testutil.Root(), p)); err == nil {
			return filepath.Join(testutil.Root(), p)
		}
	}
	return ""
}

// startSidecar builds the embedders the way app.Build does and serves a sidecar.
func startSidecar(t testing.TB, mutate func(*sidecar.Config)) *stack {
	t.Helper()
	return startSidecarES(t, func(c *sidecar.Config, _ *esproxy.Config) {
		if mutate != nil {
			mutate(c)
		}
	})
}

// startSidecarES is startSidecar with the elasticsearch section in reach
// too (the gateway alias the sidecar protects).
func startSidecarES(t testing.TB, mutate func(*sidecar.Config, *esproxy.Config)) *stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := config.Default()
	pre, err := preprocess.New(cfg.Preprocess)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(tokenizerPath(), cfg.Triton.Text.MaxSeqLen)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Triton.Text.PadID = tok.PadID()
	tc, err := triton.Dial(ctx, cfg.Triton, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tc.WaitReady(ctx, time.Second); err != nil {
		t.Fatalf("Triton not ready (is `make up` running?): %v", err)
	}
	ie, te := triton.NewImageEncoder(tc), triton.NewTextEncoder(tc)
	images := embed.NewImages(pre, ie, pre.TensorLen(), embed.NewLimiter(2, cfg.Decode.QueueSize, nil))
	texts := embed.NewTexts(tok, te)

	scfg := sidecar.DefaultConfig()
	scfg.Rules = append(scfg.Rules, sidecar.Rule{Index: "tusou-sc-*", Field: "caption", Kind: sidecar.KindText, Target: "caption_embedding", Keep: true})
	escfg := esproxy.DefaultConfig()
	escfg.Addresses = []string{esURL}
	if mutate != nil {
		mutate(&scfg, &escfg)
	}
	embeds := &embedCount{}
	sc, err := sidecar.New(scfg, escfg, embeds.images(images), embeds.texts(texts), zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: sc, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() {
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		srv.Shutdown(sctx)
		sc.Close()
		ie.Close(sctx)
		te.Close(sctx)
		tc.Close()
	})
	return &stack{url: "http://" + ln.Addr().String(), images: images, texts: texts, embeds: embeds}
}

func randomName(prefix string) string {
	var b [4]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// deleteIndex deletes through Elasticsearch directly: the sidecar refuses it.
func deleteIndex(name string) {
	req, _ := http.NewRequest("DELETE", esURL+"/"+name+"?ignore_unavailable=true", nil)
	if r, err := http.DefaultClient.Do(req); err == nil {
		r.Body.Close()
	}
}

// mapping is the test index: unquantised HNSW, because the tiny random test
// models put all images within ~1e-3 cosine of each other, the same order as
// int8 quantisation error (real CLIP weights rank the same with int8_hnsw).
const mapping = `{"settings":{"number_of_shards":1,"number_of_replicas":0},
 "mappings":{"properties":{
  "image_embedding":{"type":"dense_vector","dims":512,"index":true,"similarity":"cosine","index_options":{"type":"hnsw"}},
  "caption_embedding":{"type":"dense_vector","dims":512,"index":true,"similarity":"cosine","index_options":{"type":"hnsw"}},
  "file":{"type":"keyword"},"n":{"type":"integer"},"caption":{"type":"text"}}}}`

// deleteAlias deletes the concrete indices behind the native gateway's alias.
func deleteAlias(alias string) {
	resp, err := http.Get(esURL + "/_alias/" + alias)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	var indices map[string]any
	json.NewDecoder(resp.Body).Decode(&indices)
	for name := range indices {
		deleteIndex(name)
	}
}

type fixture struct {
	testutil.FixtureImage
	data []byte
	b64  string
}

func loadFixtures(t testing.TB) []fixture {
	t.Helper()
	fx, err := testutil.Fixtures()
	if err != nil {
		t.Fatal(err)
	}
	var out []fixture
	for _, f := range fx {
		data, err := os.ReadFile(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fixture{f, data, base64.StdEncoding.EncodeToString(data)})
	}
	return out
}

func goClient(t testing.TB, url string, compress bool) *elasticsearch.Client {
	t.Helper()
	es, err := elasticsearch.NewClient(elasticsearch.Config{Addresses: []string{url}, CompressRequestBody: compress})
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// reader returns a function that reads a client answer as (status, JSON
// body); it takes the client call's two results directly.
func reader(t testing.TB) func(*esapi.Response, error) (int, map[string]any) {
	return func(res *esapi.Response, err error) (int, map[string]any) {
		t.Helper()
		return readAnswer(t, res, err)
	}
}

func readAnswer(t testing.TB, res *esapi.Response, err error) (int, map[string]any) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	body, _ := io.ReadAll(res.Body)
	if len(body) > 0 {
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("%d: not JSON: %s", res.StatusCode, body)
		}
	}
	return res.StatusCode, m
}

func cosine(a []any, b []float32) float64 {
	v := make([]float32, len(a))
	for i, x := range a {
		v[i] = float32(x.(float64))
	}
	return testutil.Cosine(v, b)
}

type hit struct {
	ID     string         `json:"_id"`
	Score  float64        `json:"_score"`
	Source map[string]any `json:"_source"`
}

func hitsOf(t testing.TB, m map[string]any) []hit {
	t.Helper()
	raw, _ := json.Marshal(m["hits"].(map[string]any)["hits"])
	var hs []hit
	json.Unmarshal(raw, &hs)
	return hs
}

// selfFirst reports whether a hit for file ties for first place: variants of
// one photo in the fixtures (RGBA on white vs 16-bit RGB) embed identically.
func selfFirst(hs []hit, file string) bool {
	for _, h := range hs {
		if h.Source["file"] == file && h.Score >= hs[0].Score-1e-6 && h.Score > 0.9999 {
			return true
		}
	}
	return false
}

// TestGoClientThroughSidecar drives the sidecar with go-elasticsearch v8.
func TestGoClientThroughSidecar(t *testing.T) {
	read := reader(t)
	s := startSidecar(t, nil)
	fx := loadFixtures(t)
	index := randomName("tusou-sc-go-")
	t.Cleanup(func() { deleteIndex(index) })
	es := goClient(t, s.url, false)

	// info() and ping() (GET / and HEAD /, which this Elasticsearch
	// distribution does not serve itself).
	status, info := read(es.Info())
	if status != 200 || info["version"].(map[string]any)["number"] == "" || info["tagline"] != "You Know, for Search" {
		t.Fatalf("info: %d %v", status, info)
	}
	if res, err := es.Ping(); err != nil || res.StatusCode != 200 {
		t.Fatalf("ping: %v %v", res, err)
	}

	status, body := read(es.Indices.Create(index, es.Indices.Create.WithBody(strings.NewReader(mapping))))
	if status != 200 {
		t.Fatalf("create index: %d %v", status, body)
	}
	res, err := es.Indices.Exists([]string{index})
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("exists: %v %v", res, err)
	}

	// A 100-document bulk of images, sent gzip-compressed by the client.
	const n = 100
	var bulk bytes.Buffer
	for i := 0; i < n; i++ {
		f := fx[i%len(fx)]
		fmt.Fprintf(&bulk, `{"index":{"_id":"doc-%d"}}`+"\n", i)
		fmt.Fprintf(&bulk, `{"image_base64":%q,"file":%q,"n":%d}`+"\n", f.b64, f.File, i)
	}
	gz := goClient(t, s.url, true)
	start := time.Now()
	status, body = read(gz.Bulk(bytes.NewReader(bulk.Bytes()), gz.Bulk.WithIndex(index), gz.Bulk.WithRefresh("true")))
	took := time.Since(start)
	if status != 200 || body["errors"] != false || len(body["items"].([]any)) != n {
		t.Fatalf("bulk: %d errors=%v", status, body["errors"])
	}
	t.Logf("100-image bulk through the sidecar: %s (%.1f img/s), %d bytes of NDJSON", took.Round(time.Millisecond), n/took.Seconds(), bulk.Len())
	status, body = read(es.Count(es.Count.WithIndex(index)))
	if status != 200 || body["count"] != float64(n) {
		t.Fatalf("count: %d %v", status, body)
	}

	// Stored documents carry the vector, not the image, and the vector is
	// the reference embedding of the image (parity with the native path).
	worst := 1.0
	for i := 0; i < len(fx); i++ {
		status, doc := read(es.Get(index, fmt.Sprintf("doc-%d", i)))
		src, _ := doc["_source"].(map[string]any)
		if status != 200 || src == nil {
			t.Fatalf("get doc-%d: %d %v", i, status, doc)
		}
		if _, kept := src["image_base64"]; kept {
			t.Fatalf("doc-%d: image_base64 stored", i)
		}
		vec, _ := src["image_embedding"].([]any)
		if len(vec) != 512 || src["file"] != fx[i].File {
			t.Fatalf("doc-%d: %d dims, file %v", i, len(vec), src["file"])
		}
		if c := cosine(vec, fx[i].ImageEmbeds); c < worst {
			worst = c
		}
	}
	if worst < 0.999 {
		t.Errorf("worst cosine to the reference embeddings %.6f < 0.999", worst)
	}
	t.Logf("stored vectors vs reference embeddings: worst cosine %.6f over %d images", worst, len(fx))

	// Single-document index (with a text rule field kept), then get.
	one := fx[0]
	doc := fmt.Sprintf(`{"image_base64":%q,"file":"single","caption":"a cat on a sofa"}`, one.b64)
	status, body = read(es.Index(index, strings.NewReader(doc), es.Index.WithDocumentID("single"), es.Index.WithRefresh("true")))
	if status != 201 || body["result"] != "created" {
		t.Fatalf("index one: %d %v", status, body)
	}
	status, body = read(es.Get(index, "single"))
	src := body["_source"].(map[string]any)
	if status != 200 || src["caption"] != "a cat on a sofa" || len(src["caption_embedding"].([]any)) != 512 || len(src["image_embedding"].([]any)) != 512 {
		t.Fatalf("get single: %d %v", status, src["caption"])
	}
	wantText, err := s.texts.Embed(context.Background(), "a cat on a sofa")
	if err != nil {
		t.Fatal(err)
	}
	if c := cosine(src["caption_embedding"].([]any), wantText); c < 0.99999 {
		t.Errorf("caption vector differs from the text embedder's: cosine %.6f", c)
	}

	// Partial update with a new image.
	upd := fmt.Sprintf(`{"doc":{"image_base64":%q}}`, fx[1].b64)
	status, body = read(es.Update(index, "single", strings.NewReader(upd), es.Update.WithRefresh("true")))
	if status != 200 {
		t.Fatalf("update: %d %v", status, body)
	}
	_, body = read(es.Get(index, "single"))
	if c := cosine(body["_source"].(map[string]any)["image_embedding"].([]any), fx[1].ImageEmbeds); c < 0.999 {
		t.Errorf("updated vector: cosine to the new image %.6f", c)
	}

	// Image query_vector_builder: every indexed image finds itself first.
	for _, f := range fx {
		q := fmt.Sprintf(`{"knn":{"field":"image_embedding","k":5,"num_candidates":100,
			"query_vector_builder":{"image_embedding":{"model_id":"clip_image","image":%q}}},"_source":["file"]}`, f.b64)
		status, body = read(es.Search(es.Search.WithIndex(index), es.Search.WithBody(strings.NewReader(q))))
		if status != 200 {
			t.Fatalf("%s: image search %d %v", f.File, status, body)
		}
		if hs := hitsOf(t, body); len(hs) == 0 || !selfFirst(hs, f.File) {
			t.Errorf("%s: not first in its own search: %+v", f.File, hs)
		}
	}

	// Text builder: the same hits as a plain query_vector computed by the
	// same embedder; as a top-level knn and as a knn query.
	text := "a photo of a rocket"
	vec, err := s.texts.Embed(context.Background(), text)
	if err != nil {
		t.Fatal(err)
	}
	vb, _ := json.Marshal(vec)
	plain := fmt.Sprintf(`{"knn":{"field":"image_embedding","k":5,"num_candidates":100,"query_vector":%s},"_source":false}`, vb)
	_, want := read(es.Search(es.Search.WithIndex(index), es.Search.WithBody(strings.NewReader(plain))))
	for _, q := range []string{
		fmt.Sprintf(`{"knn":{"field":"image_embedding","k":5,"num_candidates":100,"query_vector_builder":{"text_embedding":{"model_id":"clip_text","model_text":%q}}},"_source":false}`, text),
		fmt.Sprintf(`{"size":5,"query":{"knn":{"field":"image_embedding","k":5,"num_candidates":100,"query_vector_builder":{"text_embedding":{"model_id":"clip_text","model_text":%q}}}},"_source":false}`, text),
	} {
		status, got := read(es.Search(es.Search.WithIndex(index), es.Search.WithBody(strings.NewReader(q))))
		gh, wh := hitsOf(t, got), hitsOf(t, want)
		if status != 200 || len(gh) != 5 || len(gh) != len(wh) {
			t.Fatalf("text search: %d %v", status, got)
		}
		for i := range gh {
			if gh[i].ID != wh[i].ID || gh[i].Score != wh[i].Score {
				t.Errorf("text builder hit %d: %s %.6f, plain vector: %s %.6f", i, gh[i].ID, gh[i].Score, wh[i].ID, wh[i].Score)
			}
		}
	}

	// msearch: one good builder search, one bad image, one plain search.
	var ms bytes.Buffer
	fmt.Fprintf(&ms, "{}\n"+`{"knn":{"field":"image_embedding","k":1,"num_candidates":10,"query_vector_builder":{"image_embedding":{"image":%q}}},"_source":["file"]}`+"\n", fx[2].b64)
	fmt.Fprintf(&ms, "{}\n"+`{"knn":{"field":"image_embedding","k":1,"num_candidates":10,"query_vector_builder":{"image_embedding":{"image":%q}}}}`+"\n", base64.StdEncoding.EncodeToString([]byte("not an image")))
	fmt.Fprintf(&ms, "{}\n"+`{"size":0,"query":{"match_all":{}}}`+"\n")
	status, body = read(es.Msearch(&ms, es.Msearch.WithIndex(index)))
	rs, _ := body["responses"].([]any)
	if status != 200 || len(rs) != 3 {
		t.Fatalf("msearch: %d %v", status, body)
	}
	r0, r1, r2 := rs[0].(map[string]any), rs[1].(map[string]any), rs[2].(map[string]any)
	if r0["status"] != float64(200) || r1["status"] != float64(400) || r2["status"] != float64(200) ||
		r1["error"].(map[string]any)["type"] != "tusou_image_exception" {
		t.Fatalf("msearch responses: %v", body)
	}

	// Refused: index deletion, delete-by-query, cluster settings.
	for name, call := range map[string]func() (*esapi.Response, error){
		"indices.delete": func() (*esapi.Response, error) { return es.Indices.Delete([]string{index}) },
		"delete_by_query": func() (*esapi.Response, error) {
			return es.DeleteByQuery([]string{index}, strings.NewReader(`{"query":{"match_all":{}}}`))
		},
		"cluster.put_settings": func() (*esapi.Response, error) { return es.Cluster.PutSettings(strings.NewReader(`{"persistent":{}}`)) },
		"indices.close":        func() (*esapi.Response, error) { return es.Indices.Close([]string{index}) },
	} {
		status, body := read(call())
		e, _ := body["error"].(map[string]any)
		if status != 403 || e == nil || e["type"] != "security_exception" || !strings.Contains(fmt.Sprint(e["reason"]), name) {
			t.Errorf("%s: %d %v", name, status, body)
		}
	}
	if r, err := http.Get(esURL + "/" + index + "/_count"); err != nil || r.StatusCode != 200 {
		t.Fatalf("index gone after refused calls: %v", err)
	} else {
		r.Body.Close()
	}
}

// TestBulkItemErrorsOnRealStack: bad images fail only their items, in
// Elasticsearch's format, and nothing is stored for them.
func TestBulkItemErrorsOnRealStack(t *testing.T) {
	read := reader(t)
	s := startSidecar(t, nil)
	fx := loadFixtures(t)
	index := randomName("tusou-sc-err-")
	t.Cleanup(func() { deleteIndex(index) })
	es := goClient(t, s.url, false)
	read(es.Indices.Create(index, es.Indices.Create.WithBody(strings.NewReader(mapping))))

	jpeg := fx[0].data
	truncated := base64.StdEncoding.EncodeToString(jpeg[:len(jpeg)/3])
	var b bytes.Buffer
	lines := []string{
		`{"index":{"_id":"good-1"}}`, fmt.Sprintf(`{"image_base64":%q}`, fx[3].b64),
		`{"index":{"_id":"corrupt"}}`, fmt.Sprintf(`{"image_base64":%q}`, base64.StdEncoding.EncodeToString([]byte("definitely not an image"))),
		`{"create":{"_id":"truncated"}}`, fmt.Sprintf(`{"image_base64":%q}`, truncated),
		`{"index":{"_id":"not-base64"}}`, `{"image_base64":"%%%"}`,
		`{"index":{"_id":"plain"}}`, `{"file":"no image"}`,
		`{"index":{"_id":"es-rejects"}}`, `{"n":"not a number"}`,
		`{"create":{"_id":"good-2"}}`, fmt.Sprintf(`{"image_base64":%q}`, fx[4].b64),
	}
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	status, body := read(es.Bulk(&b, es.Bulk.WithIndex(index), es.Bulk.WithRefresh("wait_for")))
	items, _ := body["items"].([]any)
	if status != 200 || body["errors"] != true || len(items) != 7 {
		t.Fatalf("bulk: %d %v", status, body)
	}
	if took, ok := body["took"].(float64); !ok || took < 0 {
		t.Errorf("took: %v", body["took"])
	}
	want := []struct {
		action, id string
		status     int
		errType    string
	}{
		{"index", "good-1", 201, ""}, {"index", "corrupt", 400, "tusou_image_exception"},
		{"create", "truncated", 400, "tusou_image_exception"}, {"index", "not-base64", 400, "tusou_image_exception"},
		{"index", "plain", 201, ""}, {"index", "es-rejects", 400, "document_parsing_exception"},
		{"create", "good-2", 201, ""},
	}
	for i, w := range want {
		it, _ := items[i].(map[string]any)[w.action].(map[string]any)
		if it == nil || it["_id"] != w.id || it["status"] != float64(w.status) || it["_index"] != index {
			t.Errorf("item %d: %v, want %+v", i, items[i], w)
			continue
		}
		e, _ := it["error"].(map[string]any)
		if (w.errType == "") != (e == nil) || (e != nil && e["type"] != w.errType) {
			t.Errorf("item %d error: %v, want %q", i, e, w.errType)
		}
	}
	_, cnt := read(es.Count(es.Count.WithIndex(index)))
	if cnt["count"] != float64(3) {
		t.Errorf("stored %v documents, want 3", cnt["count"])
	}
	for _, id := range []string{"corrupt", "truncated", "not-base64"} {
		if status, _ := read(es.Get(index, id)); status != 404 {
			t.Errorf("%s: stored (GET %d)", id, status)
		}
	}
	// A single document with a bad image: a 400 in Elasticsearch's shape.
	status, body = read(es.Index(index, strings.NewReader(`{"image_base64":"AAAA"}`), es.Index.WithDocumentID("bad-single")))
	e, _ := body["error"].(map[string]any)
	if status != 400 || e == nil || e["type"] != "tusou_image_exception" || body["status"] != float64(400) {
		t.Fatalf("bad single: %d %v", status, body)
	}
}

// TestGoBulkIndexer: esutil.BulkIndexer, the Go client's bulk helper,
// reports a bad image as one failed item and indexes the rest.
func TestGoBulkIndexer(t *testing.T) {
	read := reader(t)
	s := startSidecar(t, nil)
	fx := loadFixtures(t)
	index := randomName("tusou-sc-bi-")
	t.Cleanup(func() { deleteIndex(index) })
	es := goClient(t, s.url, true)
	read(es.Indices.Create(index, es.Indices.Create.WithBody(strings.NewReader(mapping))))
	bi, err := esutil.NewBulkIndexer(esutil.BulkIndexerConfig{Client: es, Index: index, NumWorkers: 2, FlushBytes: 1 << 20, Refresh: "wait_for"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var failures []esutil.BulkIndexerResponseItem
	for i := 0; i < 30; i++ {
		img := fx[i%len(fx)].b64
		if i == 17 {
			img = base64.StdEncoding.EncodeToString([]byte("not an image"))
		}
		err := bi.Add(context.Background(), esutil.BulkIndexerItem{
			Action: "index", DocumentID: fmt.Sprintf("bi-%d", i),
			Body: strings.NewReader(fmt.Sprintf(`{"image_base64":%q,"n":%d}`, img, i)),
			OnFailure: func(_ context.Context, _ esutil.BulkIndexerItem, res esutil.BulkIndexerResponseItem, err error) {
				mu.Lock()
				defer mu.Unlock()
				failures = append(failures, res)
			},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := bi.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := bi.Stats()
	if st.NumFailed != 1 || st.NumIndexed != 29 || len(failures) != 1 || failures[0].DocumentID != "bi-17" ||
		failures[0].Status != 400 || failures[0].Error.Type != "tusou_image_exception" {
		t.Fatalf("stats %+v failures %+v", st, failures)
	}
	_, cnt := read(es.Count(es.Count.WithIndex(index)))
	if cnt["count"] != float64(29) {
		t.Fatalf("count %v", cnt["count"])
	}
}

// TestPythonClient runs pytests/ with the official Python client against
// a sidecar started here. The venv comes from pytests/requirements.txt.
func TestPythonClient(t *testing.T) {
	py := filepath.Join(testutil.Root(), ".local", "venv-sidecar", "bin", "python")
	if _, err := os.Stat(py); err != nil {
		// make test creates it: a missing venv is a failure, never a skip.
		t.Fatalf("no %s: `make sidecar-venv` creates it", py)
	}
	s := startSidecar(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-m", "pytest", "-q", "-p", "no:cacheprovider", filepath.Join(testutil.Root(), "esproxy", "sidecar", "pytests"))
	cmd.Env = append(os.Environ(),
		"SIDECAR_URL="+s.url, "ES_URL="+esURL, "PYTHONDONTWRITEBYTECODE=1",
		"FIXTURE_IMAGES="+filepath.Join(testutil.Root(), "model_repository", "testdata", "images"))
	out, err := cmd.CombinedOutput()
	t.Logf("pytest:\n%s", out)
	if err != nil {
		t.Fatalf("pytest failed: %v", err)
	}
}
