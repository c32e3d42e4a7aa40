//go:build integration

package sidecar_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/tusou/tusou/internal/testutil"
)

// TestBuilderSearchScoresAreExactOnInt8: a knn search whose vector the
// sidecar computes gets rescore_vector, so on an int8_hnsw field its scores
// are exact cosines against the stored float vectors; the same search sent
// straight to Elasticsearch without it is measurably off.
func TestBuilderSearchScoresAreExactOnInt8(t *testing.T) {
	read := reader(t)
	s := startSidecar(t, nil)
	fx := loadFixtures(t)
	index := randomName("tusou-sc-int8-")
	t.Cleanup(func() { deleteIndex(index) })
	sc, direct := goClient(t, s.url, false), goClient(t, esURL, false)

	int8Mapping := strings.ReplaceAll(mapping, `"type":"hnsw"`, `"type":"int8_hnsw"`)
	if status, body := read(sc.Indices.Create(index, sc.Indices.Create.WithBody(strings.NewReader(int8Mapping)))); status != 200 {
		t.Fatalf("create index: %d %v", status, body)
	}
	var bulk bytes.Buffer
	for i, f := range fx {
		fmt.Fprintf(&bulk, `{"index":{"_id":"doc-%d"}}`+"\n"+`{"image_base64":%q,"file":%q}`+"\n", i, f.b64, f.File)
	}
	if status, body := read(sc.Bulk(bytes.NewReader(bulk.Bytes()), sc.Bulk.WithIndex(index), sc.Bulk.WithRefresh("true"))); status != 200 || body["errors"] != false {
		t.Fatalf("bulk: %d %v", status, body)
	}
	stored := map[string][]float32{}
	storedVector := func(id string) []float32 {
		if v, ok := stored[id]; ok {
			return v
		}
		_, body := read(direct.Get(index, id, direct.Get.WithSourceIncludes("image_embedding")))
		raw, _ := json.Marshal(body["_source"].(map[string]any)["image_embedding"])
		var v []float32
		if err := json.Unmarshal(raw, &v); err != nil || len(v) != 512 {
			t.Fatalf("stored vector of %s: %v", id, err)
		}
		stored[id] = v
		return v
	}
	// worstError is the largest |cosine from _score - exact cosine| over the hits.
	worstError := func(q []float32, body map[string]any) float64 {
		hs := hitsOf(t, body)
		if len(hs) != 10 {
			t.Fatalf("want 10 hits, got %d: %v", len(hs), body)
		}
		worst := 0.0
		for _, h := range hs {
			worst = max(worst, math.Abs(2*h.Score-1-testutil.Cosine(q, storedVector(h.ID))))
		}
		return worst
	}

	worst, worstRaw := 0.0, 0.0
	for _, text := range []string{"a photo of a cat", "an astronaut", "a rocket", "一只猫"} {
		q, err := s.texts.Embed(context.Background(), text)
		if err != nil {
			t.Fatal(err)
		}
		built := fmt.Sprintf(`{"knn":{"field":"image_embedding","k":10,"num_candidates":100,
			"query_vector_builder":{"text_embedding":{"model_id":"clip_text","model_text":%q}}},"_source":false}`, text)
		status, body := read(sc.Search(sc.Search.WithIndex(index), sc.Search.WithBody(strings.NewReader(built))))
		if status != 200 {
			t.Fatalf("%q: %d %v", text, status, body)
		}
		worst = max(worst, worstError(q, body))

		vb, _ := json.Marshal(q)
		plain := fmt.Sprintf(`{"knn":{"field":"image_embedding","k":10,"num_candidates":100,"query_vector":%s},"_source":false}`, vb)
		_, body = read(direct.Search(direct.Search.WithIndex(index), direct.Search.WithBody(strings.NewReader(plain))))
		worstRaw = max(worstRaw, worstError(q, body))
	}
	t.Logf("int8_hnsw: max |score - exact cosine| %.2e through the sidecar, %.2e without rescore_vector", worst, worstRaw)
	if worst > 1e-5 {
		t.Errorf("sidecar builder search: scores off the exact cosine by up to %.2e (> 1e-5)", worst)
	}
	if worstRaw < 10*max(worst, 1e-6) {
		t.Errorf("without rescore_vector the error is %.2e, not measurably above %.2e: the test shows nothing", worstRaw, worst)
	}
}
