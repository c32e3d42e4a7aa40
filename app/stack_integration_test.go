//go:build integration

package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/embed"
	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/internal/testutil"
	"github.com/tusou/tusou/preprocess"
	"github.com/tusou/tusou/triton"
)

// TestStackEightImagesOneBatch is the local stack's smoke test: a 512-d
// dense_vector index, 8 images sent to Triton over gRPC as ONE batched
// request, the vectors stored, and every image its own top kNN hit.
func TestStackEightImagesOneBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := config.Default()
	var b [4]byte
	rand.Read(b[:])
	cfg.Elasticsearch.Index = "tusou-it-stack-" + hex.EncodeToString(b[:])
	defer deleteAlias(t, cfg.Elasticsearch.Index)
	reg := prometheus.NewRegistry()

	tc, err := triton.Dial(ctx, cfg.Triton, zap.NewNop(), reg)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if err := tc.WaitReady(ctx, time.Second); err != nil {
		t.Fatalf("Triton (make up): %v", err)
	}
	if err := tc.CheckModels(ctx); err != nil {
		t.Fatal(err)
	}
	enc := triton.NewImageEncoder(tc)
	defer enc.Close(ctx)

	pre, err := preprocess.New(cfg.Preprocess)
	if err != nil {
		t.Fatal(err)
	}
	// Eight different pictures (the fixtures also hold variants of one picture).
	distinct := map[string]bool{"china_original.jpg": true, "flower_progressive.jpg": true, "rocket_444.jpg": true,
		"coffee_420.jpg": true, "hopper_gray.jpg": true, "chelsea.png": true, "coins_gray.png": true, "astronaut_rgba.png": true}
	var fx []testutil.FixtureImage
	for _, f := range mustFixtures(t) {
		if distinct[f.File] {
			fx = append(fx, f)
		}
	}
	if len(fx) != 8 {
		t.Fatalf("found %d of the 8 fixture images", len(fx))
	}
	var tensors [][]float32
	var ids []string
	for _, f := range fx {
		buf := make([]float32, pre.TensorLen())
		if _, err := pre.Preprocess(ctx, readFile(t, f.Path), buf); err != nil {
			t.Fatalf("%s: %v", f.File, err)
		}
		tensors = append(tensors, buf)
		ids = append(ids, f.SHA256)
	}
	vecs, err := enc.EmbedBatch(ctx, tensors)
	if err != nil {
		t.Fatal(err)
	}
	// One ModelInfer call carried all 8: the batch-size histogram saw one sample of 8.
	mfs, _ := reg.Gather()
	var calls uint64
	var items float64
	for _, mf := range mfs {
		if mf.GetName() == "tusou_triton_batch_size" {
			for _, m := range mf.GetMetric() {
				calls += m.GetHistogram().GetSampleCount()
				items += m.GetHistogram().GetSampleSum()
			}
		}
	}
	if calls != 1 || items != 8 {
		t.Fatalf("want one batch of 8, got %d calls with %v items", calls, items)
	}

	es, err := esproxy.New(cfg.Elasticsearch, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := es.EnsureIndex(ctx, esproxy.Provenance{Model: "clip_image", Version: "1", Dims: 512}); err != nil {
		t.Fatal(err)
	}
	docs := make([]esproxy.Doc, len(vecs))
	for i, v := range vecs {
		if len(v) != 512 {
			t.Fatalf("vector %d has %d dims", i, len(v))
		}
		if err := embed.Normalize(v); err != nil {
			t.Fatal(err)
		}
		docs[i] = esproxy.Doc{ID: ids[i], Vector: v}
	}
	res, err := es.Bulk(ctx, docs, "wait_for")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("bulk item %s: %v", r.ID, r.Err)
		}
	}
	for i, v := range vecs {
		hits, err := es.KNN(ctx, esproxy.KNNQuery{Vector: v, K: 1, NumCandidates: 50})
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) != 1 || hits[0].ID != ids[i] {
			t.Errorf("image %d (%s): top hit %+v", i, fx[i].File, hits)
		}
	}
}
