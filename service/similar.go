package service

import (
	"context"
	"sync"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/esproxy"
)

// Similar finds the images nearest to a stored image, from its stored vector
// (no re-embedding, so it works without the original bytes), the image itself
// excluded inside the search so q.K others come back when they exist.
func (s *Service) Similar(ctx context.Context, id string, q Query) ([]Hit, error) {
	r, err := s.gens.Reader()
	if err != nil {
		return nil, err
	}
	vec, err := r.Store.Vector(ctx, id)
	if err != nil {
		if e := apierr.As(err); e != nil && e.Code == esproxy.CodeDocNotFound {
			return nil, apierr.Wrap(err, apierr.NotFound, "image_not_found", "image %q not found", id)
		}
		return nil, err
	}
	return s.knn(ctx, r.Store, vec, q, id)
}

// Exists returns which of ids are indexed, in request order, each once.
func (s *Service) Exists(ctx context.Context, ids []string) ([]string, error) {
	r, err := s.gens.Reader()
	if err != nil {
		return nil, err
	}
	return r.Store.Exists(ctx, ids)
}

// Near-duplicate lookups on ingest: each reports at most nearDuplicatesK
// images (a near-duplicate list is for a human or a dedup job, not a
// ranking), and at most nearDuplicatesParallel run at once so a 64-file
// request does not fan out into 64 simultaneous searches.
const (
	nearDuplicatesK        = 10
	nearDuplicatesParallel = 8
)

// nearDuplicates fills NearDuplicates of every created or existing item
// from the vector it was just embedded to (no more Triton work). It runs
// after indexing, so with refresh wait_for/true the images of one request
// find each other. Any failure fails the request: the documents are
// indexed, and a retry answers "exists" with the list.
func (s *Service) nearDuplicates(ctx context.Context, store Store, items []IngestItem, docs []*esproxy.Doc, threshold float32) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		slots    = make(chan struct{}, nearDuplicatesParallel)
	)
	for i := range items {
		it := &items[i]
		if it.Err != nil || (it.Result != Created && it.Result != Exists) || docs[i] == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			defer func() {
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
						cancel()
					}
					mu.Unlock()
				}
			}()
			defer recoverInto(&err)
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			case <-ctx.Done():
				err = ctx.Err()
				return
			}
			hits, kerr := store.KNN(ctx, esproxy.KNNQuery{
				Vector: docs[i].Vector, K: nearDuplicatesK, Similarity: &threshold, ExcludeIDs: []string{it.ID},
			})
			if kerr != nil {
				err = kerr
				return
			}
			dups := make([]Duplicate, 0, len(hits))
			for _, h := range hits {
				// Elasticsearch applies the threshold already; this guards
				// against an index whose scores are not exact.
				if h.Similarity >= float64(threshold) {
					dups = append(dups, Duplicate{ID: h.ID, Score: h.Similarity})
				}
			}
			it.NearDuplicates = dups
		}()
	}
	wg.Wait()
	return firstErr
}
