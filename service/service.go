package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/preprocess"
)

// ImageEmbedder turns image bytes into a unit vector (embed.Images).
type ImageEmbedder interface {
	Embed(ctx context.Context, data []byte) ([]float32, preprocess.Info, error)
}

// TextEmbedder turns text into a unit vector (embed.Texts).
type TextEmbedder interface {
	Embed(ctx context.Context, text string) ([]float32, error)
}

// Store is one generation's index (an esproxy.Client pinned to it).
type Store interface {
	Bulk(ctx context.Context, docs []esproxy.Doc, refresh string) ([]esproxy.ItemResult, error)
	WaitSearchable(ctx context.Context, refresh string) error
	Get(ctx context.Context, id string) (esproxy.Doc, error)
	Delete(ctx context.Context, id, refresh string) error
	KNN(ctx context.Context, q esproxy.KNNQuery) ([]esproxy.Hit, error)
	Vector(ctx context.Context, id string) ([]float32, error)
	Exists(ctx context.Context, ids []string) ([]string, error)
}

// Target is one model generation as the service uses it: its encoders and
// its index.
type Target struct {
	Name   string
	Images ImageEmbedder
	Texts  TextEmbedder
	Store  Store
}

// Generations says which generations a request uses (the models catalog).
type Generations interface {
	// Reader is the generation reads and searches use: the active one.
	Reader() (Target, error)
	// Writers are the generations a write goes to: the active one and,
	// while a switch fills another, that one too (nil otherwise).
	Writers() (active Target, next *Target, err error)
}

// Single is the Generations of a gateway with one fixed generation.
func Single(images ImageEmbedder, texts TextEmbedder, store Store) Generations {
	return single{Target{Name: "default", Images: images, Texts: texts, Store: store}}
}

type single struct{ t Target }

func (s single) Reader() (Target, error)           { return s.t, nil }
func (s single) Writers() (Target, *Target, error) { return s.t, nil, nil }

// Blobs keeps original image bytes (blobstore.Dir, blobstore.S3).
type Blobs interface {
	Put(ctx context.Context, id string, data []byte) error
	Open(ctx context.Context, id string) (io.ReadSeekCloser, int64, error)
	Delete(ctx context.Context, id string) error
}

// undoTimeout bounds a compensating delete after a failed write.
const undoTimeout = 10 * time.Second

// writeTimeout bounds an ingest's write phase (originals, index, second
// generation, refresh wait), which runs to its end even when the client has
// gone away.
const writeTimeout = 60 * time.Second

// blobParallel is how many originals one request stores at once (object
// stores answer in tens of milliseconds; a 64-file request should not take
// 64 round trips in a row).
const blobParallel = 8

// Service implements ingest, retrieval and search.
type Service struct {
	gens  Generations
	blobs Blobs // nil: originals are not kept
}

// New returns a Service. blobs may be nil.
func New(gens Generations, blobs Blobs) *Service {
	return &Service{gens: gens, blobs: blobs}
}

// Ingest embeds every upload concurrently (so the Triton batcher sees them
// together) with each generation written to, then writes in an order that
// never leaves a searchable document without its original: originals of new
// documents first, then the active generation's index, then (during a
// switch) the generation being filled, and only then makes the documents
// searchable (unless opts.Refresh says otherwise). A document that cannot be
// written everywhere is undone everywhere and fails alone.
func (s *Service) Ingest(ctx context.Context, uploads []Upload, opts IngestOptions) ([]IngestItem, error) {
	active, next, err := s.gens.Writers()
	if err != nil {
		return nil, err
	}
	items := make([]IngestItem, len(uploads))
	docs := make([]*esproxy.Doc, len(uploads))
	nextVecs := make([][]float32, len(uploads))
	var wg sync.WaitGroup
	for i := range uploads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer recoverInto(&items[i].Err)
			docs[i], items[i].Err = s.prepare(ctx, active.Images, &uploads[i])
			if docs[i] != nil {
				items[i].ID = docs[i].ID
			}
			if next != nil && items[i].Err == nil {
				nextVecs[i], _, items[i].Err = next.Images.Embed(ctx, uploads[i].Data)
			}
		}()
	}
	wg.Wait()

	var where []int
	for i, d := range docs {
		if d != nil && items[i].Err == nil {
			where = append(where, i)
		}
	}
	if len(where) == 0 {
		return items, nil
	}
	// From here on the request's cancellation (a client that went away) must
	// not stop the write halfway: documents indexed and then undone would be
	// seen for a moment (a resuming loader's existence check skips them) and
	// then vanish. The write finishes, bounded by writeTimeout.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	w := &write{s: s, uploads: uploads, items: items, docs: docs, active: active, next: next, nextVecs: nextVecs}
	if err := w.run(ctx, where); err != nil {
		return nil, err
	}
	if len(uploads) == 1 && w.writeErr != nil {
		// One image: the write's own error is the request's (its status).
		return nil, w.writeErr
	}
	stored := false
	for _, it := range items {
		stored = stored || (it.Err == nil && it.Result != "")
	}
	if stored {
		if err := waitSearchable(ctx, opts.Refresh, w.written...); err != nil {
			return nil, err
		}
	}
	if opts.NearDuplicates != nil {
		if err := s.nearDuplicates(ctx, active.Store, items, docs, *opts.NearDuplicates); err != nil {
			return nil, err
		}
	}
	return items, nil
}

// write is the write phase of one Ingest.
type write struct {
	s        *Service
	uploads  []Upload
	items    []IngestItem
	docs     []*esproxy.Doc
	active   Target
	next     *Target
	nextVecs [][]float32
	// blobbed marks items whose original this request stored.
	blobbed []bool
	// writeErr is the first index write error of an item.
	writeErr error
	// written are the generations written to so far.
	written []Target
}

// run writes the items at where; an error fails the whole request (nothing
// of it stays written).
func (w *write) run(ctx context.Context, where []int) error {
	w.blobbed = make([]bool, len(w.items))
	if err := w.storeOriginals(ctx, where); err != nil {
		return err
	}
	var batch []esproxy.Doc
	var sent []int
	for _, i := range where {
		if w.items[i].Err == nil {
			batch = append(batch, *w.docs[i])
			sent = append(sent, i)
		}
	}
	if len(batch) == 0 {
		return nil
	}
	results, err := w.active.Store.Bulk(ctx, batch, esproxy.RefreshFalse)
	if err != nil {
		w.dropOriginals(ctx, sent)
		return err
	}
	w.written = append(w.written, w.active)
	var created []int
	for j, r := range results {
		i := sent[j]
		it := &w.items[i]
		switch {
		case r.Err != nil:
			it.Err = r.Err
			if w.writeErr == nil {
				w.writeErr = r.Err
			}
			w.dropOriginals(ctx, []int{i})
		case r.Result == esproxy.Created:
			it.Result = Created
			created = append(created, i)
		default:
			it.Result = Exists
		}
	}
	if w.next != nil && len(created) > 0 {
		w.writeTo(ctx, *w.next, w.nextVecs, created)
	}
	if len(created) > 0 {
		w.catchUp(ctx, created)
	}
	return nil
}

// storeOriginals stores the bytes of the items that are new to the active
// generation, before anything is indexed. An existing document keeps its
// original untouched (its id may be a client's, with other bytes).
func (w *write) storeOriginals(ctx context.Context, where []int) error {
	if w.s.blobs == nil {
		return nil
	}
	// Only a client-chosen id can name a document with other bytes: a
	// content-hash id's original is the same bytes whoever stores it, so
	// storing it again is harmless and saves a round trip per request.
	var ids []string
	for _, i := range where {
		if w.uploads[i].ID != "" {
			ids = append(ids, w.docs[i].ID)
		}
	}
	exists := make(map[string]bool, len(ids))
	for start := 0; start < len(ids); start += esproxy.MaxExistsIDs {
		found, err := w.active.Store.Exists(ctx, ids[start:min(start+esproxy.MaxExistsIDs, len(ids))])
		if err != nil {
			return err
		}
		for _, id := range found {
			exists[id] = true
		}
	}
	var wg sync.WaitGroup
	slots := make(chan struct{}, blobParallel)
	for _, i := range where {
		if exists[w.docs[i].ID] {
			continue
		}
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			defer recoverInto(&w.items[i].Err)
			if err := w.s.blobs.Put(ctx, w.docs[i].ID, w.uploads[i].Data); err != nil {
				w.items[i].Err = err
				return
			}
			w.blobbed[i] = true
		}()
	}
	wg.Wait()
	return nil
}

// dropOriginals deletes the originals this request stored for items that
// were not indexed after all. A failed write may be stored nevertheless (a
// bulk that timed out after Elasticsearch took it, an undo that failed, a
// concurrent ingest of the same id that created it), so an original whose
// document is found where this request wrote, or cannot be checked, stays:
// a searchable document must keep its original.
func (w *write) dropOriginals(ctx context.Context, at []int) {
	if w.s.blobs == nil {
		return
	}
	var drop []int
	for _, i := range at {
		if w.blobbed[i] {
			drop = append(drop, i)
		}
	}
	if len(drop) == 0 {
		return
	}
	written := w.written
	if len(written) == 0 {
		written = []Target{w.active}
	}
	stored := map[string]bool{}
	for _, t := range written {
		for start := 0; start < len(drop); start += esproxy.MaxExistsIDs {
			chunk := drop[start:min(start+esproxy.MaxExistsIDs, len(drop))]
			ids := make([]string, len(chunk))
			for k, i := range chunk {
				ids[k] = w.docs[i].ID
			}
			found, err := t.Store.Exists(ctx, ids)
			if err != nil {
				return
			}
			for _, id := range found {
				stored[id] = true
			}
		}
	}
	for _, i := range drop {
		if !stored[w.docs[i].ID] {
			_ = w.s.blobs.Delete(ctx, w.docs[i].ID)
			w.blobbed[i] = false
		}
	}
}

// writeTo writes the items just created in the active generation to t, a
// generation a switch is filling (vecs: t's vectors by item). An item that
// cannot be written there is undone where it was written (and its original
// dropped) and fails: a retry writes both, while a document left in the
// active generation only would be missing after the switch (the backfill
// may have passed it already).
func (w *write) writeTo(ctx context.Context, t Target, vecs [][]float32, created []int) {
	if len(created) == 0 {
		return
	}
	batch := make([]esproxy.Doc, len(created))
	for k, i := range created {
		d := *w.docs[i]
		d.Vector = vecs[i]
		batch[k] = d
	}
	results, err := t.Store.Bulk(ctx, batch, esproxy.RefreshFalse)
	for k, i := range created {
		ierr := err
		if ierr == nil && results[k].Err != nil {
			ierr = results[k].Err
		}
		if ierr != nil { // else created, or already filled by the switch's backfill
			w.undo(ctx, i, ierr)
		}
	}
	w.written = append(w.written, t)
}

// undo removes item i from the generations written so far, drops its
// original and fails it with err.
func (w *write) undo(ctx context.Context, i int, err error) {
	undo, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	for _, t := range w.written {
		_ = t.Store.Delete(undo, w.docs[i].ID, esproxy.RefreshFalse)
	}
	w.dropOriginals(undo, []int{i})
	cancel()
	w.items[i].Err, w.items[i].Result = err, ""
	if w.writeErr == nil {
		w.writeErr = err
	}
}

// catchUp writes the items just created to the generations written to now
// that were not when the request began: its view of the generations may
// predate a switch (read before this gateway saw <alias>-next, then a long
// embedding), whose backfill may have passed these ids already, or whose
// cut-over may even have made another generation active. Without this an
// acknowledged image would be missing after the switch.
func (w *write) catchUp(ctx context.Context, created []int) {
	active, next, err := w.s.gens.Writers()
	if err != nil {
		return // a stale view: the switch's propagation wait outlasts it
	}
	for _, t := range []*Target{&active, next} {
		if t == nil || slices.ContainsFunc(w.written, func(d Target) bool { return d.Name == t.Name }) {
			continue
		}
		vecs := make([][]float32, len(w.items))
		errs := make([]error, len(w.items))
		var wg sync.WaitGroup
		for _, i := range created {
			if w.items[i].Err == nil {
				wg.Go(func() {
					defer recoverInto(&errs[i])
					vecs[i], _, errs[i] = t.Images.Embed(ctx, w.uploads[i].Data)
				})
			}
		}
		wg.Wait()
		var ok []int
		for _, i := range created {
			switch {
			case w.items[i].Err != nil:
			case errs[i] != nil:
				w.undo(ctx, i, errs[i])
			default:
				ok = append(ok, i)
			}
		}
		w.writeTo(ctx, *t, vecs, ok)
	}
}

// waitSearchable waits until what was written is searchable in every
// generation written (the active one and the one being filled): a switch
// may move the alias right after the write, and an acknowledged image must
// not vanish from results.
func waitSearchable(ctx context.Context, refresh string, targets ...Target) error {
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() { errs[i] = t.Store.WaitSearchable(ctx, refresh) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// prepare hashes and embeds one upload with images.
func (s *Service) prepare(ctx context.Context, images ImageEmbedder, up *Upload) (*esproxy.Doc, error) {
	sum := sha256.Sum256(up.Data)
	hash := hex.EncodeToString(sum[:])
	id := up.ID
	if id == "" {
		id = hash
	}
	vec, info, err := images.Embed(ctx, up.Data)
	if err != nil {
		return &esproxy.Doc{ID: id}, err
	}
	return &esproxy.Doc{
		ID:          id,
		Vector:      vec,
		ContentType: preprocess.MediaType(info.Format),
		Width:       info.Width,
		Height:      info.Height,
		Bytes:       int64(len(up.Data)),
		SHA256:      hash,
		Metadata:    up.Metadata,
		// Set here, not by each index write: during a switch both
		// generations must record the same time.
		CreatedAt: time.Now(),
	}, nil
}

// Get returns an image's description.
func (s *Service) Get(ctx context.Context, id string) (*Image, error) {
	r, err := s.gens.Reader()
	if err != nil {
		return nil, err
	}
	d, err := r.Store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return toImage(d)
}

// Content returns the original bytes of an image.
func (s *Service) Content(ctx context.Context, id string) (io.ReadSeekCloser, *Image, error) {
	if s.blobs == nil {
		return nil, nil, apierr.New(apierr.NotFound, "content_not_stored", "this gateway does not keep original images (blobs.dir is empty)")
	}
	img, err := s.Get(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	r, _, err := s.blobs.Open(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	return r, img, nil
}

// Delete removes the document from every generation written to (so it
// stops matching at once), then the original. refresh has Elasticsearch's
// meanings ("" is the configured default, wait_for: gone from search
// results when Delete returns). A retry after a partial failure finishes the
// job: a document already gone from the active generation is still removed
// from the others and its original deleted.
func (s *Service) Delete(ctx context.Context, id, refresh string) error {
	active, next, err := s.gens.Writers()
	if err != nil {
		return err
	}
	gone := active.Store.Delete(ctx, id, esproxy.RefreshFalse)
	if gone != nil && apierr.KindOf(gone) != apierr.NotFound {
		return gone
	}
	if next != nil {
		if err := next.Store.Delete(ctx, id, esproxy.RefreshFalse); err != nil && apierr.KindOf(err) != apierr.NotFound {
			return err
		}
	}
	if s.blobs != nil {
		if err := s.blobs.Delete(ctx, id); err != nil {
			return err
		}
	}
	if gone != nil {
		return gone
	}
	written := []Target{active}
	if next != nil {
		written = append(written, *next)
	}
	return waitSearchable(ctx, refresh, written...)
}

// SearchImage finds the images nearest to the query image.
func (s *Service) SearchImage(ctx context.Context, data []byte, q Query) ([]Hit, error) {
	r, err := s.gens.Reader()
	if err != nil {
		return nil, err
	}
	vec, _, err := r.Images.Embed(ctx, data)
	if err != nil {
		return nil, err
	}
	return s.knn(ctx, r.Store, vec, q)
}

// SearchText finds the images nearest to the text.
func (s *Service) SearchText(ctx context.Context, text string, q Query) ([]Hit, error) {
	r, err := s.gens.Reader()
	if err != nil {
		return nil, err
	}
	vec, err := r.Texts.Embed(ctx, text)
	if err != nil {
		return nil, err
	}
	return s.knn(ctx, r.Store, vec, q)
}

// knn searches the index; hits never include the exclude ids.
func (s *Service) knn(ctx context.Context, store Store, vec []float32, q Query, exclude ...string) ([]Hit, error) {
	hits, err := store.KNN(ctx, esproxy.KNNQuery{
		Vector: vec, K: q.K, NumCandidates: q.NumCandidates, Filter: q.Filter, Similarity: q.MinScore,
		ExcludeIDs: exclude,
	})
	if err != nil {
		return nil, err
	}
	out := make([]Hit, len(hits))
	for i, h := range hits {
		out[i] = Hit{ID: h.ID, Score: h.Similarity}
		if len(h.Doc.Metadata) > 0 {
			md, err := json.Marshal(h.Doc.Metadata)
			if err != nil {
				return nil, apierr.Wrap(err, apierr.Internal, "internal", "internal error")
			}
			out[i].Metadata = md
		}
	}
	return out, nil
}

func toImage(d esproxy.Doc) (*Image, error) {
	img := &Image{
		ID: d.ID, SHA256: d.SHA256, ContentType: d.ContentType, Width: d.Width, Height: d.Height,
		Bytes: d.Bytes, Model: d.Model, ModelVersion: d.ModelVersion, CreatedAt: d.CreatedAt,
	}
	if len(d.Metadata) > 0 {
		md, err := json.Marshal(d.Metadata)
		if err != nil {
			return nil, apierr.Wrap(err, apierr.Internal, "internal", "internal error")
		}
		img.Metadata = md
	}
	return img, nil
}

// recoverInto turns a panic in an ingest worker into that item's error, so
// one poisonous image cannot take the process down.
func recoverInto(errp *error) {
	if r := recover(); r != nil {
		*errp = apierr.New(apierr.Internal, "internal", "internal error while processing the image")
	}
}
