package esproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/tusou/tusou/apierr"
)

// KNNQuery is an approximate nearest-neighbour search.
type KNNQuery struct {
	// Vector is the L2-normalised query embedding.
	Vector []float32
	// K is how many hits to return, 1..10000.
	K int
	// NumCandidates is how many candidates each shard's HNSW search keeps
	// (recall vs latency); 0 means Config.NumCandidatesFactor*K clamped to
	// [max(K,100), 10000].
	NumCandidates int
	// Filter restricts hits to documents whose metadata matches every key:
	// a scalar value is an exact match (term), a list matches any of its
	// values (terms). Keys address metadata, nested keys with dots ("a.b").
	// Values compare as text: strings as is, numbers in their JSON form,
	// booleans as "true"/"false".
	Filter map[string]any
	// Similarity, when set, drops hits whose raw similarity (the cosine,
	// -1..1, not the score) is below it. With rescoring it applies to the
	// exact, rescored similarity.
	Similarity *float32
	// ExcludeIDs are documents never returned (an image's own id when
	// searching for its neighbours). They are filtered inside the kNN
	// search, so K hits still come back when K others exist.
	ExcludeIDs []string
}

// Hit is one search result. Vectors are never returned.
type Hit struct {
	ID string
	// Score is Elasticsearch's _score, (1+cosine)/2 in [0, 1]: exact on
	// float indices and, with Config.RescoreOversample, on quantised ones.
	Score float64
	// Similarity is the cosine similarity, 2*Score-1 in [-1, 1].
	Similarity float64
	// Doc is the stored document (ID set, Vector nil).
	Doc Doc
}

// Limits that protect Elasticsearch from a single expensive query.
const (
	maxK              = 10000 // Elasticsearch's num_candidates ceiling
	minNumCandidates  = 100
	maxFilterKeys     = 32
	maxFilterValues   = 1024 // all keys together
	maxFilterKeyBytes = 256
	maxExcludeIDs     = 1024
)

// KNN runs a top-level kNN search on the vector field, restricted by the
// metadata filter, and returns up to K hits, best first.
func (c *Client) KNN(ctx context.Context, q KNNQuery) (hits []Hit, err error) {
	defer c.observe("knn", time.Now(), &err)
	body, k, err := c.knnBody(q)
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	res, err := c.perform(ctx, "search", esapi.SearchRequest{
		Index: []string{c.Target()},
		Body:  bytes.NewReader(body),
		// A shard failure is an error, not silently fewer neighbours.
		AllowPartialSearchResults: ptr(false),
		FilterPath:                []string{"hits.hits._id", "hits.hits._score", "hits.hits._source"},
	})
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var out struct {
		Hits struct {
			Hits []struct {
				ID     string          `json:"_id"`
				Score  float64         `json:"_score"`
				Source json.RawMessage `json:"_source"`
			} `json:"hits"`
		} `json:"hits"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return nil, apierr.Wrap(err, apierr.BadGateway, CodeBadGateway, "elasticsearch search: unreadable answer")
	}
	hits = make([]Hit, 0, min(len(out.Hits.Hits), k))
	for _, h := range out.Hits.Hits {
		doc, err := decodeSource(h.ID, h.Source)
		if err != nil {
			return nil, err
		}
		hits = append(hits, Hit{ID: h.ID, Score: h.Score, Similarity: 2*h.Score - 1, Doc: doc})
	}
	return hits, nil
}

// knnBody validates q and encodes the search request.
func (c *Client) knnBody(q KNNQuery) ([]byte, int, error) {
	if err := c.checkVector(q.Vector, "query vector"); err != nil {
		return nil, 0, err
	}
	if q.K < 1 || q.K > maxK {
		return nil, 0, apierr.New(apierr.InvalidArgument, CodeInvalidQuery, "k must be in [1, %d], got %d", maxK, q.K)
	}
	nc := q.NumCandidates
	if nc == 0 {
		nc = min(max(q.K*c.cfg.NumCandidatesFactor, minNumCandidates, q.K), maxK)
	}
	if nc < q.K || nc > maxK {
		return nil, 0, apierr.New(apierr.InvalidArgument, CodeInvalidQuery,
			"num_candidates must be in [k=%d, %d], got %d", q.K, maxK, nc)
	}
	if s := q.Similarity; s != nil && (*s != *s || *s < -1 || *s > 1) {
		return nil, 0, apierr.New(apierr.InvalidArgument, CodeInvalidQuery, "similarity must be in [-1, 1], got %g", *s)
	}
	if len(q.ExcludeIDs) > maxExcludeIDs {
		return nil, 0, apierr.New(apierr.InvalidArgument, CodeInvalidQuery, "at most %d excluded ids, got %d", maxExcludeIDs, len(q.ExcludeIDs))
	}
	for _, id := range q.ExcludeIDs {
		if err := checkID(id); err != nil {
			return nil, 0, err
		}
	}

	b := make([]byte, 0, c.docSizeHint()+256)
	b = append(b, `{"knn":{"field":"`...)
	b = append(b, c.cfg.VectorField...)
	b = append(b, `","query_vector":`...)
	b = AppendVector(b, q.Vector)
	b = append(b, `,"k":`...)
	b = strconv.AppendInt(b, int64(q.K), 10)
	b = append(b, `,"num_candidates":`...)
	b = strconv.AppendInt(b, int64(nc), 10)
	if q.Similarity != nil {
		b = append(b, `,"similarity":`...)
		b = strconv.AppendFloat(b, float64(*q.Similarity), 'g', -1, 32)
	}
	if o := c.cfg.RescoreOversample; o > 0 && c.quantized.Load() {
		// Verified on Elasticsearch 8.19: the similarity threshold then
		// applies to the rescored (exact) similarity.
		b = append(b, `,"rescore_vector":{"oversample":`...)
		b = strconv.AppendFloat(b, o, 'g', -1, 64)
		b = append(b, '}')
	}
	if len(q.Filter) > 0 || len(q.ExcludeIDs) > 0 {
		var err error
		b = append(b, `,"filter":`...)
		if b, err = appendFilter(b, q.Filter, q.ExcludeIDs); err != nil {
			return nil, 0, err
		}
	}
	b = append(b, `},"size":`...)
	b = strconv.AppendInt(b, int64(q.K), 10)
	// Belt and braces: the vector is never sent back, whatever the mapping.
	b = append(b, `,"_source":{"excludes":["`...)
	b = append(b, c.cfg.VectorField...)
	b = append(b, `"]},"track_total_hits":false}`...)
	return b, q.K, nil
}

// appendFilter encodes the metadata filter as a list of term/terms queries
// on the flattened metadata field, keys sorted for a stable request, and the
// excluded ids as a must_not ids query.
func appendFilter(b []byte, f map[string]any, exclude []string) ([]byte, error) {
	if len(f) > maxFilterKeys {
		return nil, apierr.New(apierr.InvalidArgument, CodeInvalidQuery, "filter has %d keys; at most %d", len(f), maxFilterKeys)
	}
	keys := make([]string, 0, len(f))
	for k := range f {
		if err := checkFilterKey(k); err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	values := 0
	b = append(b, '[')
	for n, k := range keys {
		if n > 0 {
			b = append(b, ',')
		}
		v := f[k]
		rv := reflect.ValueOf(v)
		if v != nil && (rv.Kind() == reflect.Slice || rv.Kind() == reflect.Array) {
			if rv.Len() == 0 {
				return nil, apierr.New(apierr.InvalidArgument, CodeInvalidQuery, "filter %q: empty list matches nothing", k)
			}
			values += rv.Len()
			if values > maxFilterValues {
				return nil, apierr.New(apierr.InvalidArgument, CodeInvalidQuery, "filter has more than %d values", maxFilterValues)
			}
			b = append(b, `{"terms":{"metadata.`...)
			b = append(b, k...) // checked: letters, digits, _ - .
			b = append(b, `":[`...)
			for i := 0; i < rv.Len(); i++ {
				s, err := filterValue(k, rv.Index(i).Interface())
				if err != nil {
					return nil, err
				}
				if i > 0 {
					b = append(b, ',')
				}
				b = appendString(b, s)
			}
			b = append(b, "]}}"...)
			continue
		}
		s, err := filterValue(k, v)
		if err != nil {
			return nil, err
		}
		values++
		b = append(b, `{"term":{"metadata.`...)
		b = append(b, k...)
		b = append(b, `":`...)
		b = appendString(b, s)
		b = append(b, "}}"...)
	}
	if len(exclude) > 0 {
		if len(keys) > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"bool":{"must_not":{"ids":{"values":[`...)
		for i, id := range exclude {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, id)
		}
		b = append(b, "]}}}}"...)
	}
	return append(b, ']'), nil
}

// checkFilterKey allows dotted paths of Unicode letters, digits, '_' and '-'.
// Anything else (wildcards, spaces, quotes, empty segments) is refused so a
// key can only ever name a metadata sub-key.
func checkFilterKey(k string) error {
	bad := func(why string) error {
		return apierr.New(apierr.InvalidArgument, CodeInvalidQuery, "filter key %q %s", k, why)
	}
	if k == "" || len(k) > maxFilterKeyBytes || !utf8.ValidString(k) {
		return bad(fmt.Sprintf("must be 1..%d bytes of UTF-8", maxFilterKeyBytes))
	}
	for _, seg := range strings.Split(k, ".") {
		if seg == "" {
			return bad("has an empty path segment")
		}
		for _, r := range seg {
			if !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '_' && r != '-' {
				return bad("may only hold letters, digits, '_', '-' and '.'")
			}
		}
	}
	return nil
}

// filterValue renders a scalar as the text the flattened field indexed:
// the JSON token as encoding/json writes it (strings unquoted).
func filterValue(k string, v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case json.Number:
		return x.String(), nil
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		t, err := json.Marshal(x)
		if err != nil {
			return "", apierr.New(apierr.InvalidArgument, CodeInvalidQuery, "filter %q: %v", k, err)
		}
		return string(t), nil
	}
	return "", apierr.New(apierr.InvalidArgument, CodeInvalidQuery,
		"filter %q: values must be strings, numbers, booleans or lists of them, got %T", k, v)
}
