package service

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/preprocess"
)

type fakeImages struct{}

func (fakeImages) Embed(_ context.Context, data []byte) ([]float32, preprocess.Info, error) {
	if bytes.HasPrefix(data, []byte("bad")) {
		return nil, preprocess.Info{}, apierr.New(apierr.Unprocessable, "image_corrupt", "corrupt")
	}
	return []float32{1, 0}, preprocess.Info{Format: "jpeg", Width: 3, Height: 2}, nil
}

type fakeStore struct {
	mu      sync.Mutex
	docs    map[string]esproxy.Doc
	deleted []string
	bulkErr error
	// knnQueries are the searches made; knnErr fails them.
	knnQueries []esproxy.KNNQuery
	knnErr     error
	// bulks counts Bulk calls; failIDs fail those items.
	bulks   int
	failIDs map[string]bool
	// waits counts WaitSearchable calls.
	waits int
}

func (f *fakeStore) put(d esproxy.Doc) esproxy.Result {
	if _, ok := f.docs[d.ID]; ok {
		return esproxy.Exists
	}
	f.docs[d.ID] = d
	return esproxy.Created
}
func (f *fakeStore) Bulk(_ context.Context, docs []esproxy.Doc, _ string) ([]esproxy.ItemResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bulks++
	if f.bulkErr != nil {
		return nil, f.bulkErr
	}
	out := make([]esproxy.ItemResult, len(docs))
	for i, d := range docs {
		if f.failIDs[d.ID] {
			out[i] = esproxy.ItemResult{ID: d.ID, Result: esproxy.Failed, Err: apierr.New(apierr.BadGateway, "es_bad_gateway", "shard failed")}
			continue
		}
		out[i] = esproxy.ItemResult{ID: d.ID, Result: f.put(d)}
	}
	return out, nil
}
func (f *fakeStore) WaitSearchable(context.Context, string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waits++
	return nil
}
func (f *fakeStore) Get(_ context.Context, id string) (esproxy.Doc, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.docs[id]
	if !ok {
		return d, apierr.New(apierr.NotFound, "document_not_found", "no %s", id)
	}
	d.Vector = nil
	return d, nil
}
func (f *fakeStore) Delete(_ context.Context, id, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.docs[id]; !ok {
		return apierr.New(apierr.NotFound, "document_not_found", "no %s", id)
	}
	delete(f.docs, id)
	f.deleted = append(f.deleted, id)
	return nil
}
func (f *fakeStore) KNN(_ context.Context, q esproxy.KNNQuery) ([]esproxy.Hit, error) {
	return f.bruteForce(q)
}

type fakeBlobs struct {
	mu   sync.Mutex
	data map[string][]byte
	fail bool
}

func (b *fakeBlobs) Put(_ context.Context, id string, data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail {
		return errors.New("disk full")
	}
	b.data[id] = data
	return nil
}
func (b *fakeBlobs) Open(_ context.Context, id string) (io.ReadSeekCloser, int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, ok := b.data[id]
	if !ok {
		return nil, 0, apierr.New(apierr.NotFound, "content_not_found", "none")
	}
	return nopCloser{bytes.NewReader(d)}, int64(len(d)), nil
}
func (b *fakeBlobs) Delete(_ context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.data, id)
	return nil
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

func newSvc() (*Service, *fakeStore, *fakeBlobs) {
	st := &fakeStore{docs: map[string]esproxy.Doc{}}
	bl := &fakeBlobs{data: map[string][]byte{}}
	return New(Single(fakeImages{}, nil, st), bl), st, bl
}

func hash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestIngestIdsResultsAndOrder(t *testing.T) {
	s, st, bl := newSvc()
	ctx := context.Background()
	ups := []Upload{{Data: []byte("a")}, {Data: []byte("bad1")}, {Data: []byte("c"), ID: "mine"}, {Data: []byte("a")}}
	items, err := s.Ingest(ctx, ups, IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if items[0].ID != hash([]byte("a")) || items[0].Result != Created {
		t.Errorf("item 0: %+v", items[0])
	}
	if apierr.KindOf(items[1].Err) != apierr.Unprocessable || items[1].Result != "" {
		t.Errorf("item 1 must fail alone: %+v", items[1])
	}
	if items[2].ID != "mine" || items[2].Result != Created {
		t.Errorf("item 2: %+v", items[2])
	}
	if items[3].ID != items[0].ID || items[3].Result != Exists {
		t.Errorf("duplicate in the same request: %+v", items[3])
	}
	if len(st.docs) != 2 || st.docs["mine"].SHA256 != hash([]byte("c")) || st.docs["mine"].ContentType != "image/jpeg" {
		t.Errorf("stored docs: %+v", st.docs)
	}
	if string(bl.data["mine"]) != "c" || len(bl.data) != 2 {
		t.Errorf("blobs: %v", bl.data)
	}
	// "exists" must never overwrite the original of the document that exists.
	if _, err := s.Ingest(ctx, []Upload{{Data: []byte("other bytes"), ID: "mine"}}, IngestOptions{}); err != nil {
		t.Fatal(err)
	}
	if string(bl.data["mine"]) != "c" {
		t.Fatalf("original overwritten by an exists answer: %q", bl.data["mine"])
	}
}

func TestIngestIndexesNothingWhenTheOriginalCannotBeStored(t *testing.T) {
	s, st, bl := newSvc()
	bl.fail = true
	items, err := s.Ingest(context.Background(), []Upload{{Data: []byte("x")}, {Data: []byte("y")}}, IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Err == nil || it.Result != "" {
			t.Errorf("want a failed item, got %+v", it)
		}
	}
	// Originals go first: a document without one is never indexed, not
	// even for a moment (no undo needed).
	if len(st.docs) != 0 || len(st.deleted) != 0 || st.bulks != 0 {
		t.Fatalf("indexed without an original: docs %v, deleted %v, bulks %d", st.docs, st.deleted, st.bulks)
	}
}

func TestIngestDropsTheOriginalsWhenIndexingFails(t *testing.T) {
	s, st, bl := newSvc()
	st.bulkErr = apierr.New(apierr.Unavailable, "es_unavailable", "down")
	if _, err := s.Ingest(context.Background(), []Upload{{Data: []byte("x")}, {Data: []byte("y")}}, IngestOptions{}); apierr.KindOf(err) != apierr.Unavailable {
		t.Fatalf("want Unavailable, got %v", err)
	}
	if len(bl.data) != 0 {
		t.Fatalf("originals left without documents: %d", len(bl.data))
	}
}

func TestIngestStoreFailureFailsRequest(t *testing.T) {
	s, st, _ := newSvc()
	st.bulkErr = apierr.New(apierr.Unavailable, "es_unavailable", "down")
	if _, err := s.Ingest(context.Background(), []Upload{{Data: []byte("x")}, {Data: []byte("y")}}, IngestOptions{}); apierr.KindOf(err) != apierr.Unavailable {
		t.Fatalf("want Unavailable, got %v", err)
	}
}

func TestContentAndDelete(t *testing.T) {
	s, _, bl := newSvc()
	ctx := context.Background()
	items, _ := s.Ingest(ctx, []Upload{{Data: []byte("img"), Metadata: map[string]any{"k": "v"}}}, IngestOptions{})
	id := items[0].ID
	r, img, err := s.Content(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	if string(got) != "img" || img.ContentType != "image/jpeg" || string(img.Metadata) != `{"k":"v"}` {
		t.Fatalf("content %q image %+v", got, img)
	}
	if err := s.Delete(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	if _, ok := bl.data[id]; ok {
		t.Fatal("blob kept after delete")
	}
	if _, err := s.Get(ctx, id); apierr.KindOf(err) != apierr.NotFound {
		t.Fatalf("get after delete: %v", err)
	}
}

// ctxBlobs fails a Put whose context is done, as blobstore.Dir does.
type ctxBlobs struct{ *fakeBlobs }

func (b ctxBlobs) Put(ctx context.Context, id string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.fakeBlobs.Put(ctx, id, data)
}

// cancellingStore stores a bulk, then cancels the request: the client went
// away while its documents were being written.
type cancellingStore struct {
	*fakeStore
	cancel context.CancelFunc
}

func (s cancellingStore) Bulk(ctx context.Context, docs []esproxy.Doc, refresh string) ([]esproxy.ItemResult, error) {
	res, err := s.fakeStore.Bulk(ctx, docs, refresh)
	s.cancel()
	return res, err
}

// A client that disconnects mid-write must not leave documents that are
// indexed, seen by others (a resuming loader's existence check), and then
// undone because their originals could not be stored under its cancelled
// context.
func TestIngestFinishesItsWriteWhenTheClientGoesAway(t *testing.T) {
	st := &fakeStore{docs: map[string]esproxy.Doc{}}
	bl := &fakeBlobs{data: map[string][]byte{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(Single(fakeImages{}, nil, cancellingStore{st, cancel}), ctxBlobs{bl})
	items, err := s.Ingest(ctx, []Upload{{Data: []byte("x")}, {Data: []byte("y")}}, IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Err != nil || it.Result != Created {
			t.Errorf("item %+v: want created", it)
		}
	}
	if len(st.docs) != 2 || len(st.deleted) != 0 || len(bl.data) != 2 {
		t.Fatalf("docs %d, deleted %v, originals %d: want 2 documents with their originals, none undone", len(st.docs), st.deleted, len(bl.data))
	}
}

// twoGens is a switch in progress: writes go to active and next.
type twoGens struct{ active, next Target }

func (g twoGens) Reader() (Target, error)           { return g.active, nil }
func (g twoGens) Writers() (Target, *Target, error) { return g.active, &g.next, nil }

// nextImages embeds like another model would: a different vector.
type nextImages struct{}

func (nextImages) Embed(_ context.Context, data []byte) ([]float32, preprocess.Info, error) {
	return []float32{0, 1}, preprocess.Info{Format: "jpeg", Width: 3, Height: 2}, nil
}

func newSwitching() (*Service, *fakeStore, *fakeStore, *fakeBlobs) {
	a := &fakeStore{docs: map[string]esproxy.Doc{}}
	b := &fakeStore{docs: map[string]esproxy.Doc{}}
	bl := &fakeBlobs{data: map[string][]byte{}}
	gens := twoGens{Target{Name: "a", Images: fakeImages{}, Store: a}, Target{Name: "b", Images: nextImages{}, Store: b}}
	return New(gens, bl), a, b, bl
}

func TestIngestDuringASwitchWritesBothGenerations(t *testing.T) {
	s, a, b, bl := newSwitching()
	items, err := s.Ingest(context.Background(), []Upload{{Data: []byte("x"), Metadata: map[string]any{"k": "v"}}, {Data: []byte("y")}}, IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Err != nil || it.Result != Created {
			t.Fatalf("item %+v", it)
		}
		da, db := a.docs[it.ID], b.docs[it.ID]
		if da.Vector[0] != 1 || db.Vector[1] != 1 {
			t.Fatalf("each generation gets its own model's vector: a %v, b %v", da.Vector, db.Vector)
		}
		if da.SHA256 != db.SHA256 || len(da.Metadata) != len(db.Metadata) {
			t.Fatalf("the same document in both: a %+v, b %+v", da, db)
		}
	}
	if len(bl.data) != 2 || a.waits != 1 {
		t.Fatalf("originals %d, refresh waits on the active generation %d", len(bl.data), a.waits)
	}
}

func TestIngestUndoneEverywhereWhenTheNextGenerationFails(t *testing.T) {
	s, a, b, bl := newSwitching()
	b.failIDs = map[string]bool{hash([]byte("y")): true}
	items, err := s.Ingest(context.Background(), []Upload{{Data: []byte("x")}, {Data: []byte("y")}}, IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if items[0].Err != nil || items[0].Result != Created {
		t.Fatalf("item 0: %+v", items[0])
	}
	if items[1].Err == nil || items[1].Result != "" {
		t.Fatalf("item 1 must fail: %+v", items[1])
	}
	y := hash([]byte("y"))
	if _, ok := a.docs[y]; ok {
		t.Fatal("a document missing from the generation being filled stays in the active one")
	}
	if _, ok := bl.data[y]; ok {
		t.Fatal("its original stays")
	}
	// A retry writes both.
	b.failIDs = nil
	items, err = s.Ingest(context.Background(), []Upload{{Data: []byte("y")}}, IngestOptions{})
	if err != nil || items[0].Result != Created || b.docs[y].ID != y || a.docs[y].ID != y {
		t.Fatalf("retry: %+v %v", items, err)
	}
}

func TestDeleteDuringASwitchRemovesFromBothAndFinishesOnRetry(t *testing.T) {
	s, a, b, bl := newSwitching()
	ctx := context.Background()
	items, _ := s.Ingest(ctx, []Upload{{Data: []byte("x")}}, IngestOptions{})
	id := items[0].ID
	// The active copy is gone already (an earlier delete failed half-way).
	delete(a.docs, id)
	if err := s.Delete(ctx, id, ""); apierr.KindOf(err) != apierr.NotFound {
		t.Fatalf("want NotFound (the active generation had no such image), got %v", err)
	}
	if _, ok := b.docs[id]; ok {
		t.Fatal("still in the generation being filled")
	}
	if _, ok := bl.data[id]; ok {
		t.Fatal("original kept")
	}
}

type staleGens struct{}

func (staleGens) Reader() (Target, error) { return Target{}, nil }
func (staleGens) Writers() (Target, *Target, error) {
	return Target{}, nil, apierr.New(apierr.Unavailable, "generations_stale", "stale")
}

func TestWritesRefusedWhenTheGenerationsAreUnknown(t *testing.T) {
	s := New(staleGens{}, nil)
	if _, err := s.Ingest(context.Background(), []Upload{{Data: []byte("x")}}, IngestOptions{}); apierr.KindOf(err) != apierr.Unavailable {
		t.Fatalf("ingest: %v", err)
	}
	if err := s.Delete(context.Background(), "x", ""); apierr.KindOf(err) != apierr.Unavailable {
		t.Fatalf("delete: %v", err)
	}
}

// viewChanges is a gateway whose view of the generations changes after the
// first Writers call: a switch began (or even finished) while an ingest was
// embedding.
type viewChanges struct {
	mu    sync.Mutex
	calls int
	views []func() (Target, *Target)
}

func (g *viewChanges) Reader() (Target, error) { a, _ := g.views[0](); return a, nil }
func (g *viewChanges) Writers() (Target, *Target, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	v := g.views[min(g.calls, len(g.views)-1)]
	g.calls++
	a, n := v()
	return a, n, nil
}

// An ingest whose view predates a switch (taken before the gateway re-read
// the aliases, then a long embedding) still reaches the generation being
// filled, and the one made active meanwhile: that switch's backfill may
// have passed the id already, and an acknowledged image must be there.
func TestIngestReachesAGenerationThatBecameWrittenMeanwhile(t *testing.T) {
	a := &fakeStore{docs: map[string]esproxy.Doc{}}
	b := &fakeStore{docs: map[string]esproxy.Doc{}}
	ta := Target{Name: "a", Images: fakeImages{}, Store: a}
	tb := Target{Name: "b", Images: nextImages{}, Store: b}
	for name, later := range map[string]func() (Target, *Target){
		"switch started": func() (Target, *Target) { return ta, &tb },
		"switch done":    func() (Target, *Target) { return tb, nil },
	} {
		t.Run(name, func(t *testing.T) {
			clear(a.docs)
			clear(b.docs)
			gens := &viewChanges{views: []func() (Target, *Target){func() (Target, *Target) { return ta, nil }, later}}
			s := New(gens, &fakeBlobs{data: map[string][]byte{}})
			items, err := s.Ingest(context.Background(), []Upload{{Data: []byte("x"), Metadata: map[string]any{"k": "v"}}}, IngestOptions{})
			if err != nil || items[0].Err != nil || items[0].Result != Created {
				t.Fatalf("ingest: %+v %v", items, err)
			}
			id := items[0].ID
			if a.docs[id].ID != id {
				t.Fatal("not in the generation active when the request came")
			}
			db, ok := b.docs[id]
			if !ok {
				t.Fatal("acknowledged, but missing from the generation the switch fills")
			}
			if db.Vector[1] != 1 || db.SHA256 != a.docs[id].SHA256 || db.Metadata["k"] != "v" || !db.CreatedAt.Equal(a.docs[id].CreatedAt) {
				t.Fatalf("b's copy: %+v (want b's vector, a's facts)", db)
			}
		})
	}
}

// appliedButFailed is a store whose writes are applied but answer an error:
// a bulk that timed out after Elasticsearch took it, or the item of a
// concurrent ingest of the same id that another request created meanwhile.
type appliedButFailed struct {
	*fakeStore
	whole bool // the whole bulk fails, else each item
}

func (s appliedButFailed) Bulk(ctx context.Context, docs []esproxy.Doc, refresh string) ([]esproxy.ItemResult, error) {
	if _, err := s.fakeStore.Bulk(ctx, docs, refresh); err != nil {
		return nil, err
	}
	if s.whole {
		return nil, apierr.New(apierr.Timeout, "es_timeout", "elasticsearch did not answer in time")
	}
	out := make([]esproxy.ItemResult, len(docs))
	for i, d := range docs {
		out[i] = esproxy.ItemResult{ID: d.ID, Result: esproxy.Failed, Err: apierr.New(apierr.Overloaded, "es_overloaded", "rejected")}
	}
	return out, nil
}

// A write that failed but whose document is stored after all (searchable)
// keeps its original: the original is what a switch re-embeds from.
func TestIngestKeepsTheOriginalOfADocumentStoredDespiteAnError(t *testing.T) {
	for _, whole := range []bool{true, false} {
		st := &fakeStore{docs: map[string]esproxy.Doc{}}
		bl := &fakeBlobs{data: map[string][]byte{}}
		s := New(Single(fakeImages{}, nil, appliedButFailed{st, whole}), bl)
		_, _ = s.Ingest(context.Background(), []Upload{{Data: []byte("x")}, {Data: []byte("y")}}, IngestOptions{})
		for _, data := range []string{"x", "y"} {
			id := hash([]byte(data))
			if _, indexed := st.docs[id]; indexed {
				if _, kept := bl.data[id]; !kept {
					t.Errorf("whole bulk failed %t: %s is indexed, its original was deleted", whole, data)
				}
			}
		}
	}
}

// countingExists counts existence checks.
type countingExists struct {
	*fakeStore
	n int
}

func (c *countingExists) Exists(ctx context.Context, ids []string) ([]string, error) {
	c.n++
	return c.fakeStore.Exists(ctx, ids)
}

// Content-hash ids need no existence check before their originals are
// stored (the bytes are the same whoever stores them); client ids do.
func TestOnlyClientIDsAreCheckedBeforeStoringOriginals(t *testing.T) {
	st := &countingExists{fakeStore: &fakeStore{docs: map[string]esproxy.Doc{}}}
	bl := &fakeBlobs{data: map[string][]byte{}}
	s := New(Single(fakeImages{}, nil, st), bl)
	if _, err := s.Ingest(context.Background(), []Upload{{Data: []byte("x")}, {Data: []byte("y")}}, IngestOptions{}); err != nil {
		t.Fatal(err)
	}
	if st.n != 0 || len(bl.data) != 2 {
		t.Fatalf("hash ids: %d existence checks, %d originals", st.n, len(bl.data))
	}
	if _, err := s.Ingest(context.Background(), []Upload{{Data: []byte("z"), ID: "mine"}}, IngestOptions{}); err != nil {
		t.Fatal(err)
	}
	if st.n != 1 {
		t.Fatalf("a client id: %d existence checks, want 1", st.n)
	}
}
