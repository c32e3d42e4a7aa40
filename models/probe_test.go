package models

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/tusou/tusou/esproxy"
)

// tiesLast is a target whose kNN ranks equally near documents by
// descending id: like an HNSW index, it returns some k of many identical
// vectors, not necessarily the one asked about.
type tiesLast struct{ *memStore }

func (s tiesLast) KNN(ctx context.Context, q esproxy.KNNQuery) ([]esproxy.Hit, error) {
	all := q
	all.K = 1 << 20
	hits, err := s.memStore.KNN(ctx, all)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(hits, func(i, j int) bool {
		if hits[i].Similarity != hits[j].Similarity {
			return hits[i].Similarity > hits[j].Similarity
		}
		return hits[i].ID > hits[j].ID
	})
	return hits[:min(q.K, len(hits))], nil
}

// Many documents with the same image under different ids (a catalogue's
// placeholder picture) have identical vectors: verification must not fail
// because a search by one of them returns k others that are just as near.
func TestVerifyAcceptsIdenticalImagesUnderManyIDs(t *testing.T) {
	w := newWorld(t, 0, SwitchOptions{})
	same := []byte("placeholder")
	for i := range 30 {
		w.originals.m[docID(i)] = same
		w.from.put(esproxy.Doc{ID: docID(i), Vector: fakeVector("a", string(same), unitDims), ContentType: "image/jpeg",
			Width: 1, Height: 1, Bytes: int64(len(same)), SHA256: sha256Hex(same), CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
	}
	w.c.to = tiesLast{w.to}
	ctx := context.Background()
	if err := w.c.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.c.verify(ctx, "a", "b"); err != nil {
		t.Fatalf("verify: %v", err)
	}
}
