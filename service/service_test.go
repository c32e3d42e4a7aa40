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
}

func (f *fakeStore) put(d esproxy.Doc) esproxy.Result {
	if _, ok := f.docs[d.ID]; ok {
		return esproxy.Exists
	}
	f.docs[d.ID] = d
	return esproxy.Created
}
func (f *fakeStore) Index(_ context.Context, d esproxy.Doc, _ string) (esproxy.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.put(d), nil
}
func (f *fakeStore) Bulk(_ context.Context, docs []esproxy.Doc, _ string) ([]esproxy.ItemResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bulkErr != nil {
		return nil, f.bulkErr
	}
	out := make([]esproxy.ItemResult, len(docs))
	for i, d := range docs {
		out[i] = esproxy.ItemResult{ID: d.ID, Result: f.put(d)}
	}
	return out, nil
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
	return New(fakeImages{}, nil, st, bl), st, bl
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

func TestIngestUndoesDocumentWhenBlobFails(t *testing.T) {
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
	if len(st.docs) != 0 || len(st.deleted) != 2 {
		t.Fatalf("half-written documents left: %v (deleted %v)", st.docs, st.deleted)
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
	s := New(fakeImages{}, nil, cancellingStore{st, cancel}, ctxBlobs{bl})
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
