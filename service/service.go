package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
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

// Store is the index (esproxy.Client).
type Store interface {
	Index(ctx context.Context, doc esproxy.Doc, refresh string) (esproxy.Result, error)
	Bulk(ctx context.Context, docs []esproxy.Doc, refresh string) ([]esproxy.ItemResult, error)
	Get(ctx context.Context, id string) (esproxy.Doc, error)
	Delete(ctx context.Context, id, refresh string) error
	KNN(ctx context.Context, q esproxy.KNNQuery) ([]esproxy.Hit, error)
	Vector(ctx context.Context, id string) ([]float32, error)
	Exists(ctx context.Context, ids []string) ([]string, error)
}

// Blobs keeps original image bytes (blobstore.Dir).
type Blobs interface {
	Put(ctx context.Context, id string, data []byte) error
	Open(ctx context.Context, id string) (io.ReadSeekCloser, int64, error)
	Delete(ctx context.Context, id string) error
}

// undoTimeout bounds the compensating delete after a failed blob write.
const undoTimeout = 10 * time.Second

// writeTimeout bounds an ingest's write phase (index, originals, refresh
// wait), which runs to its end even when the client has gone away.
const writeTimeout = 60 * time.Second

// Service implements ingest, retrieval and search.
type Service struct {
	images ImageEmbedder
	texts  TextEmbedder
	store  Store
	blobs  Blobs // nil: originals are not kept
}

// New returns a Service. blobs may be nil.
func New(images ImageEmbedder, texts TextEmbedder, store Store, blobs Blobs) *Service {
	return &Service{images: images, texts: texts, store: store, blobs: blobs}
}

// Ingest embeds every upload concurrently (so the Triton batcher sees them
// together), stores the originals, then indexes all documents in one bulk
// request that returns once they are searchable (unless opts.Refresh says
// otherwise). An item that fails to decode or embed fails alone; nothing is
// indexed for it.
func (s *Service) Ingest(ctx context.Context, uploads []Upload, opts IngestOptions) ([]IngestItem, error) {
	items := make([]IngestItem, len(uploads))
	docs := make([]*esproxy.Doc, len(uploads))
	var wg sync.WaitGroup
	for i := range uploads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer recoverInto(&items[i].Err)
			docs[i], items[i].Err = s.prepare(ctx, &uploads[i])
			if docs[i] != nil {
				items[i].ID = docs[i].ID
			}
		}()
	}
	wg.Wait()

	var batch []esproxy.Doc
	var where []int
	for i, d := range docs {
		if d != nil && items[i].Err == nil {
			batch = append(batch, *d)
			where = append(where, i)
		}
	}
	if len(batch) == 0 {
		return items, nil
	}
	// From here on the request's cancellation (a client that went away) must
	// not stop the write halfway: documents indexed and then undone because
	// their originals could not be stored under a cancelled context would be
	// seen for a moment (a resuming loader's existence check skips them) and
	// then vanish. The write finishes, bounded by writeTimeout.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	if len(batch) == 1 {
		res, err := s.store.Index(ctx, batch[0], opts.Refresh)
		if err != nil {
			if len(uploads) == 1 {
				return nil, err
			}
			items[where[0]].Err = err
			return items, nil
		}
		items[where[0]].Result = Result(res)
	} else {
		results, err := s.store.Bulk(ctx, batch, opts.Refresh)
		if err != nil {
			return nil, err
		}
		for j, r := range results {
			it := &items[where[j]]
			if r.Err != nil {
				it.Err = r.Err
				continue
			}
			it.Result = Result(r.Result)
		}
	}
	s.storeOriginals(ctx, uploads, items)
	if opts.NearDuplicates != nil {
		if err := s.nearDuplicates(ctx, items, docs, *opts.NearDuplicates); err != nil {
			return nil, err
		}
	}
	return items, nil
}

// storeOriginals keeps the bytes of newly created documents. It runs after
// indexing so an "exists" answer never overwrites the original of the
// document that exists; if the bytes cannot be stored, the document is
// deleted again so nothing half-written stays behind.
func (s *Service) storeOriginals(ctx context.Context, uploads []Upload, items []IngestItem) {
	if s.blobs == nil {
		return
	}
	for i := range items {
		it := &items[i]
		if it.Err != nil || it.Result != Created {
			continue
		}
		if err := s.blobs.Put(ctx, it.ID, uploads[i].Data); err != nil {
			// Undo with a fresh context: the request's may be what failed.
			undo, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
			_ = s.store.Delete(undo, it.ID, "")
			cancel()
			it.Err, it.Result = err, ""
		}
	}
}

// prepare hashes, embeds and stores the original of one upload.
func (s *Service) prepare(ctx context.Context, up *Upload) (*esproxy.Doc, error) {
	sum := sha256.Sum256(up.Data)
	hash := hex.EncodeToString(sum[:])
	id := up.ID
	if id == "" {
		id = hash
	}
	vec, info, err := s.images.Embed(ctx, up.Data)
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
	}, nil
}

// Get returns an image's description.
func (s *Service) Get(ctx context.Context, id string) (*Image, error) {
	d, err := s.store.Get(ctx, id)
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

// Delete removes the document first (so it stops matching at once), then the
// original. refresh has Elasticsearch's meanings ("" is the configured
// default, wait_for: gone from search results when Delete returns).
func (s *Service) Delete(ctx context.Context, id, refresh string) error {
	if err := s.store.Delete(ctx, id, refresh); err != nil {
		return err
	}
	if s.blobs != nil {
		return s.blobs.Delete(ctx, id)
	}
	return nil
}

// SearchImage finds the images nearest to the query image.
func (s *Service) SearchImage(ctx context.Context, data []byte, q Query) ([]Hit, error) {
	vec, _, err := s.images.Embed(ctx, data)
	if err != nil {
		return nil, err
	}
	return s.knn(ctx, vec, q)
}

// SearchText finds the images nearest to the text.
func (s *Service) SearchText(ctx context.Context, text string, q Query) ([]Hit, error) {
	vec, err := s.texts.Embed(ctx, text)
	if err != nil {
		return nil, err
	}
	return s.knn(ctx, vec, q)
}

// knn searches the index; hits never include the exclude ids.
func (s *Service) knn(ctx context.Context, vec []float32, q Query, exclude ...string) ([]Hit, error) {
	hits, err := s.store.KNN(ctx, esproxy.KNNQuery{
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
