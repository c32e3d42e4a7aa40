//go:build integration

package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/internal/testutil"
)

var esURL = testutil.ESURL()

// stack is one gateway built on the real local stack (make up), serving on a
// random port, with its own index alias so tests never share state.
type stack struct {
	app   *App
	url   string
	alias string
}

func startGateway(t *testing.T, mutate func(*config.Config)) *stack {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	cfg := config.Default()
	cfg.Elasticsearch.Index = "tusou-it-" + hex.EncodeToString(b[:])
	cfg.Blobs.Dir = t.TempDir()
	cfg.Text.TokenizerPath = testutil.TokenizerPath()
	// The default index type, int8_hnsw, as in production: the tiny random
	// test models put every image within a few thousandths of cosine of the
	// others, the order of int8 error, so the rankings these tests assert
	// hold only because kNN rescores its candidates on the float vectors
	// (elasticsearch.rescore_oversample) — which is what they then prove.
	if mutate != nil {
		mutate(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	bctx, bcancel := context.WithTimeout(ctx, 60*time.Second)
	defer bcancel()
	a, err := Build(bctx, cfg, zap.NewNop(), "test")
	if err != nil {
		cancel()
		t.Fatalf("build gateway on the local stack (is `make up` running?): %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.ServeListener(ctx, ln) }()
	s := &stack{app: a, url: "http://" + ln.Addr().String(), alias: cfg.Elasticsearch.Index}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("shutdown: %v", err)
		}
		deleteAlias(t, s.alias)
	})
	return s
}

func deleteAlias(t *testing.T, alias string) {
	// The alias's index, and every generation's (<alias>-…: filled by a
	// switch, or kept behind <alias>-previous).
	resp, err := http.Get(esURL + "/_cat/indices/" + alias + "-*?h=index&expand_wildcards=all")
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for _, name := range strings.Fields(string(raw)) {
		req, _ := http.NewRequest("DELETE", esURL+"/"+name, nil)
		if r, err := http.DefaultClient.Do(req); err == nil {
			r.Body.Close()
		}
	}
}

func esCount(t *testing.T, alias string) int {
	t.Helper()
	resp, err := http.Get(esURL + "/" + alias + "/_count")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Count int }
	json.NewDecoder(resp.Body).Decode(&out)
	return out.Count
}

// esVector reads the stored vector straight from Elasticsearch (the API never
// returns vectors).
func esVector(t *testing.T, alias, id, field string) []float32 {
	t.Helper()
	resp, err := http.Get(esURL + "/" + alias + "/_doc/" + id + "?_source_includes=" + field)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Source map[string][]float32 `json:"_source"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out.Source[field]
}

type ingestResponse struct {
	Items []struct {
		ID     string
		Result string
		Error  *struct{ Code, Message string }
	}
	Errors bool
}

func postFiles(t *testing.T, url string, files map[string][]byte, fields map[string]string) (int, []byte) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for name, data := range files {
		fw, _ := w.CreateFormFile("file", name)
		fw.Write(data)
	}
	for k, v := range fields {
		w.WriteField(k, v)
	}
	w.Close()
	resp, err := http.Post(url, w.FormDataContentType(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func postRaw(t *testing.T, url, contentType string, data []byte) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, contentType, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

type searchResponse struct {
	Hits []struct {
		ID       string
		Score    float64
		Metadata map[string]any
	}
}

func mustFixtures(t *testing.T) []testutil.FixtureImage {
	t.Helper()
	fx, err := testutil.Fixtures()
	if err != nil {
		t.Fatal(err)
	}
	return fx
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestIngestSearchLifecycle covers every /v1 route on the real stack.
func TestIngestSearchLifecycle(t *testing.T) {
	s := startGateway(t, nil)
	fx := mustFixtures(t)
	files := map[string][]byte{}
	wantID := map[string]string{}
	for _, f := range fx {
		if f.File == "neardup_b.jpg" { // kept out: it is the query below
			continue
		}
		files[f.File] = readFile(t, f.Path)
		wantID[f.File] = f.SHA256
	}
	status, body := postFiles(t, s.url+"/v1/images", files, map[string]string{"metadata": `{"set":"fixtures","n":1}`})
	if status != 201 {
		t.Fatalf("ingest: %d %s", status, body)
	}
	var ing ingestResponse
	json.Unmarshal(body, &ing)
	if ing.Errors || len(ing.Items) != len(files) {
		t.Fatalf("ingest items: %s", body)
	}
	ids := map[string]bool{}
	for _, it := range ing.Items {
		if it.Result != "created" {
			t.Fatalf("item %s: %s", it.ID, it.Result)
		}
		ids[it.ID] = true
	}
	for name, id := range wantID {
		if !ids[id] {
			t.Errorf("%s: id %s (its SHA-256) missing from %s", name, id, body)
		}
	}
	// Searchable on success: no refresh needed before counting.
	n := esCount(t, s.alias)
	if n != len(files) {
		t.Fatalf("index holds %d documents right after ingest, want %d", n, len(files))
	}

	// Re-ingesting identical bytes: same id, "exists", no new document.
	china := readFile(t, filepath.Join(testutil.Root(), "model_repository/testdata/images/china_original.jpg"))
	status, body = postRaw(t, s.url+"/v1/images", "image/jpeg", china)
	json.Unmarshal(body, &ing)
	if status != 200 || ing.Items[0].Result != "exists" || ing.Items[0].ID != wantID["china_original.jpg"] {
		t.Fatalf("re-ingest: %d %s", status, body)
	}
	if got := esCount(t, s.alias); got != n {
		t.Fatalf("re-ingest added documents: %d -> %d", n, got)
	}

	// A resized, recompressed copy finds its original at rank 1.
	status, body = postFiles(t, s.url+"/v1/search/image", map[string][]byte{"q.jpg": readFile(t, filepath.Join(testutil.Root(), "model_repository/testdata/images/neardup_b.jpg"))}, map[string]string{"k": "5"})
	var sr searchResponse
	json.Unmarshal(body, &sr)
	if status != 200 || len(sr.Hits) != 5 || sr.Hits[0].ID != wantID["neardup_a.jpg"] {
		t.Fatalf("near-duplicate search: %d %s", status, body)
	}
	t.Logf("near duplicate: rank 1 score %.6f, rank 2 score %.6f", sr.Hits[0].Score, sr.Hits[1].Score)
	if sr.Hits[0].Metadata["set"] != "fixtures" {
		t.Errorf("hit metadata missing: %s", body)
	}

	// Every indexed image finds itself first (raw-body search).
	for name, id := range wantID {
		status, body = postRaw(t, s.url+"/v1/search/image?k=3", "image/"+strings.TrimPrefix(filepath.Ext(name), "."), files[name])
		json.Unmarshal(body, &sr)
		if status != 200 || len(sr.Hits) == 0 {
			t.Errorf("%s: self search: %d %s", name, status, body)
			continue
		}
		// Variants of one picture in the fixtures (RGBA on white vs 16-bit
		// RGB of the same photo) can embed identically; self must tie for first.
		found := false
		for _, h := range sr.Hits {
			found = found || (h.ID == id && h.Score >= sr.Hits[0].Score-1e-6 && h.Score > 0.9999)
		}
		if !found {
			t.Errorf("%s: self search did not rank itself first: %s", name, body)
		}
	}

	// Text search in Chinese and other languages returns hits; filters apply.
	for _, q := range []string{"一只猫坐在沙发上", "a photo of a rocket", "Ракета на стартовой площадке"} {
		status, body = postRaw(t, s.url+"/v1/search/text", "application/json", []byte(fmt.Sprintf(`{"text":%q,"k":4}`, q)))
		json.Unmarshal(body, &sr)
		if status != 200 || len(sr.Hits) != 4 {
			t.Fatalf("text search %q: %d %s", q, status, body)
		}
	}
	status, body = postRaw(t, s.url+"/v1/search/text", "application/json", []byte(`{"text":"猫","k":10,"filter":{"set":"other"}}`))
	json.Unmarshal(body, &sr)
	if status != 200 || len(sr.Hits) != 0 {
		t.Fatalf("filter must exclude everything: %d %s", status, body)
	}

	// Get, content, delete.
	id := wantID["china_original.jpg"]
	resp, err := http.Get(s.url + "/v1/images/" + id)
	if err != nil {
		t.Fatal(err)
	}
	var img map[string]any
	json.NewDecoder(resp.Body).Decode(&img)
	resp.Body.Close()
	if resp.StatusCode != 200 || img["width"] != float64(640) || img["content_type"] != "image/jpeg" || img["model"] != "clip_image" {
		t.Fatalf("get: %d %v", resp.StatusCode, img)
	}
	if _, leaked := img["image_embedding"]; leaked {
		t.Fatal("vector leaked through GET")
	}
	resp, err = http.Get(s.url + "/v1/images/" + id + "/content")
	if err != nil {
		t.Fatal(err)
	}
	content, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(content, china) || resp.Header.Get("Content-Type") != "image/jpeg" {
		t.Fatalf("content: %d, %d bytes", resp.StatusCode, len(content))
	}
	req, _ := http.NewRequest("DELETE", s.url+"/v1/images/"+id, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	for _, p := range []string{"/v1/images/" + id, "/v1/images/" + id + "/content"} {
		resp, _ = http.Get(s.url + p)
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("GET %s after delete: %d", p, resp.StatusCode)
		}
	}
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("second delete: %d, want 404", resp.StatusCode)
	}
}

// TestParityThroughGateway: every fixture image, uploaded over HTTP, ends up
// in Elasticsearch as a vector with cosine >= 0.999 to the reference
// (Pillow + transformers CLIPImageProcessor + the same model in onnxruntime).
func TestParityThroughGateway(t *testing.T) {
	s := startGateway(t, nil)
	fx := mustFixtures(t)
	worst, worstName := 1.0, ""
	for _, f := range fx {
		status, body := postRaw(t, s.url+"/v1/images", "image/"+strings.ToLower(f.Format), readFile(t, f.Path))
		if status != 201 && status != 200 {
			t.Errorf("%s: ingest %d %s", f.File, status, body)
			continue
		}
		var ing ingestResponse
		json.Unmarshal(body, &ing)
		vec := esVector(t, s.alias, ing.Items[0].ID, "image_embedding")
		if len(vec) != 512 {
			t.Fatalf("%s: stored vector has %d dims", f.File, len(vec))
		}
		c := testutil.Cosine(vec, f.ImageEmbeds)
		if c < worst {
			worst, worstName = c, f.File
		}
		if c < 0.999 {
			t.Errorf("%s: cosine to the reference %.6f < 0.999", f.File, c)
		}
	}
	t.Logf("parity over %d fixture images: worst cosine %.6f (%s)", len(fx), worst, worstName)
}

// TestConcurrentRequestsAreBatched: 50 concurrent single-image requests reach
// Triton as batches averaging at least 80% of min(50, max batch), read from
// the gateway's own metrics.
func TestConcurrentRequestsAreBatched(t *testing.T) {
	const maxBatch = 10
	s := startGateway(t, func(c *config.Config) {
		c.Triton.Image.Batcher.MaxBatchSize = maxBatch
		// Decoding 50 photos on a 2-core machine spreads their arrival at the
		// batcher over 100+ ms (more on a loaded CI box); the delay lets a batch gather what decoding
		// produces (on a GPU node with many cores, 2 ms does the same job).
		c.Triton.Image.Batcher.MaxDelay = 500 * time.Millisecond
		c.Triton.Image.Batcher.MaxInflight = 1
	})
	photo := readFile(t, filepath.Join(testutil.Root(), "model_repository/testdata/images/china_original.jpg"))
	before := batchStats(t, s)
	var wg sync.WaitGroup
	errs := make(chan string, 50)
	for i := 0; i < 50; i++ {
		data := photo
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(s.url+"/v1/search/image?k=1", "image/jpeg", bytes.NewReader(data))
			if err != nil {
				errs <- err.Error()
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Sprint("status ", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	after := batchStats(t, s)
	batches, items := after.count-before.count, after.sum-before.sum
	if items != 50 {
		t.Fatalf("Triton saw %v images, want 50", items)
	}
	avg := items / batches
	t.Logf("50 concurrent requests -> %v batches, average batch %.1f (max %d)", batches, avg, maxBatch)
	if avg < 0.8*maxBatch {
		t.Fatalf("average batch %.1f < 80%% of %d", avg, maxBatch)
	}
}

type histStats struct{ count, sum float64 }

func batchStats(t *testing.T, s *stack) histStats {
	t.Helper()
	mfs, err := s.app.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tusou_triton_batch_size" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "model" && l.GetValue() == s.app.cfg.Triton.Image.Label() {
					return histStats{float64(m.GetHistogram().GetSampleCount()), m.GetHistogram().GetSampleSum()}
				}
			}
		}
	}
	return histStats{}
}

// TestRefusesIndexOfAnotherModel: an index built by a different model with
// the same name, version and dims (its fingerprint differs) is refused at
// start-up, so vectors of two models never mix.
func TestRefusesIndexOfAnotherModel(t *testing.T) {
	var b [4]byte
	rand.Read(b[:])
	alias := "tusou-it-fp-" + hex.EncodeToString(b[:])
	defer deleteAlias(t, alias)
	cfg := config.Default()
	cfg.Elasticsearch.Index = alias
	es, err := esproxy.New(cfg.Elasticsearch, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	other := make([]float32, 512)
	for i := range other {
		other[i] = float32(i%5) - 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := es.EnsureIndex(ctx, esproxy.Provenance{Model: "clip_image", Version: "1", Dims: 512, Fingerprint: other}); err != nil {
		t.Fatal(err)
	}
	cfg.Blobs.Dir = t.TempDir()
	cfg.Text.TokenizerPath = testutil.TokenizerPath()
	_, err = Build(ctx, cfg, zap.NewNop(), "test")
	if err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("want a refusal naming the fingerprint, got %v", err)
	}
	t.Logf("refused as expected: %v", err)
}
