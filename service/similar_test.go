package service

import (
	"context"
	"math"
	"reflect"
	"slices"
	"sort"
	"testing"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/preprocess"
)

// bruteForce is an exact kNN over the fake's documents, honouring what
// esproxy.KNN promises: ExcludeIDs, Similarity (a cosine), K, best first.
func (f *fakeStore) bruteForce(q esproxy.KNNQuery) ([]esproxy.Hit, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.knnQueries = append(f.knnQueries, q)
	if f.knnErr != nil {
		return nil, f.knnErr
	}
	var hits []esproxy.Hit
	for id, d := range f.docs {
		if slices.Contains(q.ExcludeIDs, id) {
			continue
		}
		var dot, nq, nd float64
		for i := range d.Vector {
			dot += float64(d.Vector[i]) * float64(q.Vector[i])
			nq += float64(q.Vector[i]) * float64(q.Vector[i])
			nd += float64(d.Vector[i]) * float64(d.Vector[i])
		}
		cos := dot / math.Sqrt(nq*nd)
		if q.Similarity != nil && cos < float64(*q.Similarity) {
			continue
		}
		hits = append(hits, esproxy.Hit{ID: id, Similarity: cos, Score: (1 + cos) / 2, Doc: esproxy.Doc{ID: id, Metadata: d.Metadata}})
	}
	sort.Slice(hits, func(i, j int) bool { return hits[i].Similarity > hits[j].Similarity })
	if len(hits) > q.K {
		hits = hits[:q.K]
	}
	return hits, nil
}

func (f *fakeStore) Vector(_ context.Context, id string) ([]float32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.docs[id]
	if !ok {
		return nil, apierr.New(apierr.NotFound, esproxy.CodeDocNotFound, "no %s", id)
	}
	return d.Vector, nil
}

func (f *fakeStore) Exists(_ context.Context, ids []string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	found := []string{}
	for _, id := range ids {
		if _, ok := f.docs[id]; ok && !slices.Contains(found, id) {
			found = append(found, id)
		}
	}
	return found, nil
}

// vecImages embeds an image named by its first byte to a fixed 2-d vector,
// so tests choose the cosines.
type vecImages map[byte][]float32

func (v vecImages) Embed(_ context.Context, data []byte) ([]float32, preprocess.Info, error) {
	vec, ok := v[data[0]]
	if !ok {
		return nil, preprocess.Info{}, apierr.New(apierr.Unprocessable, "image_corrupt", "corrupt")
	}
	return vec, preprocess.Info{Format: "png"}, nil
}

// angle returns the unit vector at deg degrees: cos(a-b) is the cosine.
func angle(deg float64) []float32 {
	r := deg * math.Pi / 180
	return []float32{float32(math.Cos(r)), float32(math.Sin(r))}
}

func TestIngestReportsNearDuplicates(t *testing.T) {
	st := &fakeStore{docs: map[string]esproxy.Doc{}}
	// a and b are 10° apart (cos 0.985), c is 60° from a (cos 0.5).
	s := New(Single(vecImages{'a': angle(0), 'b': angle(10), 'c': angle(60)}, nil, st), nil)
	ctx := context.Background()
	thr := float32(0.95)

	// Without the option nothing is looked up.
	items, err := s.Ingest(ctx, []Upload{{Data: []byte("a1"), ID: "a"}}, IngestOptions{})
	if err != nil || items[0].NearDuplicates != nil || len(st.knnQueries) != 0 {
		t.Fatalf("not asked: %+v %v, %d searches", items, err, len(st.knnQueries))
	}

	items, err = s.Ingest(ctx, []Upload{
		{Data: []byte("b1"), ID: "b"}, {Data: []byte("c1"), ID: "c"}, {Data: []byte("a2"), ID: "a"}, {Data: []byte("?"), ID: "bad"},
	}, IngestOptions{NearDuplicates: &thr})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]IngestItem{}
	for _, it := range items {
		byID[it.ID] = it
	}
	if d := byID["b"].NearDuplicates; len(d) != 1 || d[0].ID != "a" || math.Abs(d[0].Score-math.Cos(10*math.Pi/180)) > 1e-6 {
		t.Errorf("b: near duplicates %+v, want a at cos 10°", d)
	}
	// The existing a finds the new b (same request), never itself.
	if it := byID["a"]; it.Result != Exists || len(it.NearDuplicates) != 1 || it.NearDuplicates[0].ID != "b" {
		t.Errorf("a: %+v", it)
	}
	// None above the threshold: an empty list, not "not asked".
	if d := byID["c"].NearDuplicates; d == nil || len(d) != 0 {
		t.Errorf("c: %#v, want an empty list", d)
	}
	if it := byID["bad"]; it.Err == nil || it.NearDuplicates != nil {
		t.Errorf("failed item: %+v", it)
	}
	for _, q := range st.knnQueries {
		if q.Similarity == nil || *q.Similarity != thr || len(q.ExcludeIDs) != 1 || q.K != nearDuplicatesK {
			t.Errorf("near-duplicate search %+v", q)
		}
	}

	st.knnErr = apierr.New(apierr.Unavailable, "es_unavailable", "down")
	if _, err := s.Ingest(ctx, []Upload{{Data: []byte("c2"), ID: "c"}}, IngestOptions{NearDuplicates: &thr}); apierr.KindOf(err) != apierr.Unavailable {
		t.Fatalf("a failed lookup must fail the request, got %v", err)
	}
}

func TestSimilarUsesTheStoredVector(t *testing.T) {
	st := &fakeStore{docs: map[string]esproxy.Doc{}}
	s := New(Single(vecImages{'a': angle(0), 'b': angle(10), 'c': angle(60), 'd': angle(90)}, nil, st), nil)
	ctx := context.Background()
	if _, err := s.Ingest(ctx, []Upload{{Data: []byte("a"), ID: "a"}, {Data: []byte("b"), ID: "b"},
		{Data: []byte("c"), ID: "c"}, {Data: []byte("d"), ID: "d"}}, IngestOptions{}); err != nil {
		t.Fatal(err)
	}
	hits, err := s.Similar(ctx, "a", Query{K: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := []string{hits[0].ID, hits[1].ID}; !reflect.DeepEqual(got, []string{"b", "c"}) || len(hits) != 2 {
		t.Fatalf("hits %+v: want b, c (a itself excluded, k exact)", hits)
	}
	min := float32(0.9)
	if hits, err := s.Similar(ctx, "a", Query{K: 10, MinScore: &min}); err != nil || len(hits) != 1 || hits[0].ID != "b" {
		t.Fatalf("min_score: %+v %v", hits, err)
	}
	_, err = s.Similar(ctx, "nope", Query{K: 1})
	if e := apierr.As(err); e == nil || e.Kind != apierr.NotFound || e.Code != "image_not_found" {
		t.Fatalf("unknown id: %v", err)
	}
}

func TestExistsKeepsRequestOrder(t *testing.T) {
	s, _, _ := newSvc()
	ctx := context.Background()
	items, _ := s.Ingest(ctx, []Upload{{Data: []byte("x"), ID: "x"}, {Data: []byte("y"), ID: "y"}}, IngestOptions{})
	if len(items) != 2 {
		t.Fatal(items)
	}
	found, err := s.Exists(ctx, []string{"y", "nope", "x"})
	if err != nil || !reflect.DeepEqual(found, []string{"y", "x"}) {
		t.Fatalf("%v %v", found, err)
	}
}
