package esproxy

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/tusou/tusou/apierr"
)

func TestQuantized(t *testing.T) {
	for typ, want := range map[string]bool{
		"hnsw": false, "flat": false,
		"int8_hnsw": true, "int4_hnsw": true, "bbq_hnsw": true, "int8_flat": true, "int4_flat": true, "bbq_flat": true,
		"": true, // a mapping that does not say: rescoring a float index is harmless
	} {
		if Quantized(typ) != want {
			t.Errorf("Quantized(%q) = %v", typ, !want)
		}
	}
}

func TestConfigRescoreOversample(t *testing.T) {
	for _, ok := range []float64{0, 1, 3, 10} {
		cfg := DefaultConfig()
		cfg.RescoreOversample = ok
		if err := cfg.Validate(); err != nil {
			t.Errorf("%g: %v", ok, err)
		}
	}
	for _, bad := range []float64{-1, 0.5, 10.5} {
		cfg := DefaultConfig()
		cfg.RescoreOversample = bad
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "rescore_oversample:") {
			t.Errorf("%g: want an error naming rescore_oversample, got %v", bad, err)
		}
	}
}

// knnRescore returns the rescore_vector the body asks for, nil when none.
func knnRescore(t *testing.T, c *Client, q KNNQuery) map[string]any {
	t.Helper()
	b, _, err := c.knnBody(q)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		KNN map[string]any `json:"knn"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	r, _ := got.KNN["rescore_vector"].(map[string]any)
	return r
}

func TestKNNBodyRescoresQuantisedIndices(t *testing.T) {
	v := unitVector(rand.New(rand.NewPCG(11, 12)), testProv.Dims)
	q := KNNQuery{Vector: v, K: 10}

	cfg := testConfig("http://127.0.0.1:9") // int8_hnsw, oversample 3
	c := newTestClient(t, cfg)
	if r := knnRescore(t, c, q); !reflect.DeepEqual(r, map[string]any{"oversample": 3.0}) {
		t.Fatalf("int8_hnsw: rescore_vector %v, want oversample 3", r)
	}
	// The index wins over the configuration: a float index found by
	// EnsureIndex is not rescored, a quantised one is.
	c.quantized.Store(false)
	if r := knnRescore(t, c, q); r != nil {
		t.Fatalf("float index: rescore_vector %v", r)
	}

	cfg.IndexOptions.Type = "hnsw"
	if r := knnRescore(t, newTestClient(t, cfg), q); r != nil {
		t.Fatalf("configured hnsw: rescore_vector %v", r)
	}
	cfg.IndexOptions.Type = "int4_flat"
	cfg.RescoreOversample = 0
	if r := knnRescore(t, newTestClient(t, cfg), q); r != nil {
		t.Fatalf("oversample 0: rescore_vector %v", r)
	}
	cfg.RescoreOversample = 1.5
	if r := knnRescore(t, newTestClient(t, cfg), q); !reflect.DeepEqual(r, map[string]any{"oversample": 1.5}) {
		t.Fatalf("int4_flat: rescore_vector %v", r)
	}
}

func TestCheckExistingReportsQuantisation(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:9")
	c := newTestClient(t, cfg)
	name := ConcreteIndexName(cfg.Index, testProv)
	if info, err := c.checkExisting(existingFromBody(t, c, name, testProv), testProv); err != nil || !info.Quantized {
		t.Fatalf("int8_hnsw mapping: %+v %v", info, err)
	}
	cfg.IndexOptions.Type = "hnsw"
	f := newTestClient(t, cfg)
	if info, err := f.checkExisting(existingFromBody(t, f, name, testProv), testProv); err != nil || info.Quantized {
		t.Fatalf("hnsw mapping: %+v %v", info, err)
	}
}

func TestKNNBodyExcludesIDsInsideTheSearch(t *testing.T) {
	c := newTestClient(t, testConfig("http://127.0.0.1:9"))
	v := unitVector(rand.New(rand.NewPCG(13, 14)), testProv.Dims)
	b, _, err := c.knnBody(KNNQuery{Vector: v, K: 3, ExcludeIDs: []string{"self", `q"uote`}, Filter: map[string]any{"tag": "cat"}})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		KNN struct {
			Filter []map[string]any `json:"filter"`
		} `json:"knn"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	want := []map[string]any{
		{"term": map[string]any{"metadata.tag": "cat"}},
		{"bool": map[string]any{"must_not": map[string]any{"ids": map[string]any{"values": []any{"self", `q"uote`}}}}},
	}
	if !reflect.DeepEqual(got.KNN.Filter, want) {
		t.Fatalf("filter\n got %v\nwant %v", got.KNN.Filter, want)
	}
	// Without a metadata filter the exclusion stands alone.
	b, _, err = c.knnBody(KNNQuery{Vector: v, K: 3, ExcludeIDs: []string{"self"}})
	if err != nil || !strings.Contains(string(b), `"filter":[{"bool":{"must_not":{"ids":{"values":["self"]}}}}]`) {
		t.Fatalf("%s %v", b, err)
	}
	if _, _, err := c.knnBody(KNNQuery{Vector: v, K: 3, ExcludeIDs: []string{""}}); apierr.KindOf(err) != apierr.InvalidArgument {
		t.Fatalf("empty excluded id: %v", err)
	}
}

func TestVector(t *testing.T) {
	srv := fakeES(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("_source_includes") != "image_embedding" {
			t.Errorf("vector read without _source_includes: %s", r.URL)
		}
		switch r.URL.Path {
		case "/test-images/_doc/img":
			_, _ = io.WriteString(w, `{"_source":{"image_embedding":[1,0,0,0,0,0,0,0.5]}}`)
		case "/test-images/_doc/novec":
			_, _ = io.WriteString(w, `{"_source":{}}`)
		default:
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"_id":"nope","found":false}`)
		}
	})
	c := newTestClient(t, testConfig(srv.URL))
	v, err := c.Vector(context.Background(), "img")
	if err != nil || !reflect.DeepEqual(v, []float32{1, 0, 0, 0, 0, 0, 0, 0.5}) {
		t.Fatalf("%v %v", v, err)
	}
	_, err = c.Vector(context.Background(), "nope")
	wantKind(t, err, apierr.NotFound, CodeDocNotFound)
	_, err = c.Vector(context.Background(), "novec")
	wantKind(t, err, apierr.Unprocessable, CodeVectorNotStored)
}

func TestExists(t *testing.T) {
	var asked []string
	srv := fakeES(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/test-images/_mget" || r.URL.Query().Get("_source") != "false" {
			t.Errorf("want _mget on the alias without _source, got %s", r.URL)
		}
		var body struct{ IDs []string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		asked = body.IDs
		var docs []string
		for _, id := range body.IDs {
			switch id {
			case "broken":
				docs = append(docs, `{"_id":"broken","error":{"type":"illegal_argument_exception","reason":"alias has more than one index"}}`)
			default:
				found := strings.HasPrefix(id, "yes")
				docs = append(docs, `{"_id":"`+id+`","found":`+map[bool]string{true: "true", false: "false"}[found]+`}`)
			}
		}
		_, _ = io.WriteString(w, `{"docs":[`+strings.Join(docs, ",")+`]}`)
	})
	c := newTestClient(t, testConfig(srv.URL))
	found, err := c.Exists(context.Background(), []string{"yes2", "no", "yes1", "yes2"})
	if err != nil || !reflect.DeepEqual(found, []string{"yes2", "yes1"}) {
		t.Fatalf("found %v %v", found, err)
	}
	if !reflect.DeepEqual(asked, []string{"yes2", "no", "yes1"}) {
		t.Fatalf("duplicates must be asked once: %v", asked)
	}
	if found, err := c.Exists(context.Background(), []string{"no"}); err != nil || found == nil || len(found) != 0 {
		t.Fatalf("none found must be an empty list: %#v %v", found, err)
	}
	_, err = c.Exists(context.Background(), []string{"yes", "broken"})
	wantKind(t, err, apierr.BadGateway, CodeBadGateway)
	for _, bad := range [][]string{nil, make([]string, MaxExistsIDs+1), {""}} {
		if _, err := c.Exists(context.Background(), bad); apierr.KindOf(err) != apierr.InvalidArgument {
			t.Errorf("%d ids: want InvalidArgument, got %v", len(bad), err)
		}
	}
}
