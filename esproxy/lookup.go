package esproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/tusou/tusou/apierr"
)

// CodeVectorNotStored is the error code of Vector when the mapping keeps
// vectors out of _source (Config.ExcludeVectorFromSource).
const CodeVectorNotStored = "vector_not_stored"

// MaxExistsIDs is the most ids one Exists call checks.
const MaxExistsIDs = 1000

// Vector returns the stored embedding of a document, read from _source
// (realtime: a document is readable as soon as it is indexed), or NotFound.
func (c *Client) Vector(ctx context.Context, id string) (vec []float32, err error) {
	defer c.observe("get_vector", time.Now(), &err)
	if err := checkID(id); err != nil {
		return nil, err
	}
	ctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	res, err := c.perform(ctx, "get", esapi.GetRequest{
		Index:          c.Target(),
		DocumentID:     escapeID(id),
		SourceIncludes: []string{c.cfg.VectorField},
		FilterPath:     []string{"_source", "error", "status"},
	}, 404)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode == 404 {
		return nil, notFound("get", id, res)
	}
	var out struct {
		Source map[string][]float32 `json:"_source"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return nil, apierr.Wrap(err, apierr.BadGateway, CodeBadGateway, "elasticsearch get: unreadable vector of %q", id)
	}
	vec = out.Source[c.cfg.VectorField]
	if len(vec) == 0 {
		return nil, apierr.New(apierr.Unprocessable, CodeVectorNotStored,
			"document %q has no %s in its _source (the index keeps vectors out of _source), so its neighbours cannot be looked up",
			id, c.cfg.VectorField)
	}
	if len(vec) != c.cfg.Dims {
		return nil, apierr.New(apierr.BadGateway, CodeBadGateway, "document %q has a %d-dim vector; the index has %d", id, len(vec), c.cfg.Dims)
	}
	return vec, nil
}

// Exists returns which of ids are indexed, in the order given, each once.
// It reads in realtime (_mget), so a document is found as soon as it is
// stored, before any refresh: a resumed bulk load with refresh=false must not
// upload again what it has already sent.
func (c *Client) Exists(ctx context.Context, ids []string) (found []string, err error) {
	defer c.observe("exists", time.Now(), &err)
	if len(ids) == 0 || len(ids) > MaxExistsIDs {
		return nil, apierr.New(apierr.InvalidArgument, CodeInvalidQuery, "exists takes 1..%d ids, got %d", MaxExistsIDs, len(ids))
	}
	seen := make(map[string]struct{}, len(ids))
	uniq := make([]string, 0, len(ids))
	for _, id := range ids {
		if err := checkID(id); err != nil {
			return nil, err
		}
		if _, dup := seen[id]; !dup {
			seen[id] = struct{}{}
			uniq = append(uniq, id)
		}
	}
	b := mgetBody(uniq)

	ctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	res, err := c.perform(ctx, "mget", esapi.MgetRequest{
		Index:      c.Target(),
		Body:       bytes.NewReader(b),
		Source:     []string{"false"},
		FilterPath: []string{"docs._id", "docs.found", "docs.error"},
	})
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	docs, err := decodeMget(res.Body, len(uniq))
	if err != nil {
		return nil, err
	}
	found = []string{}
	for i, d := range docs {
		if d.Found {
			found = append(found, uniq[i])
		}
	}
	return found, nil
}

// mgetBody is the _mget request for ids: {"ids":[...]}.
func mgetBody(ids []string) []byte {
	b := make([]byte, 0, 16+len(ids)*68)
	b = append(b, `{"ids":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, id)
	}
	return append(b, "]}"...)
}

// mgetDoc is one document of an _mget answer.
type mgetDoc struct {
	ID          string          `json:"_id"`
	Found       bool            `json:"found"`
	SeqNo       int64           `json:"_seq_no"`
	PrimaryTerm int64           `json:"_primary_term"`
	Source      json.RawMessage `json:"_source"`
	Error       json.RawMessage `json:"error"`
}

// decodeMget reads an _mget answer for n ids, one document per id in
// order. A per-document error fails the call: it is the index's (an alias
// over several indices, a closed shard), never the id's, and must not
// report a document as missing.
func decodeMget(body io.Reader, n int) ([]mgetDoc, error) {
	var out struct {
		Docs []mgetDoc `json:"docs"`
	}
	if err := json.NewDecoder(body).Decode(&out); err != nil {
		return nil, apierr.Wrap(err, apierr.BadGateway, CodeBadGateway, "elasticsearch mget: unreadable answer")
	}
	if len(out.Docs) != n {
		return nil, apierr.New(apierr.BadGateway, CodeBadGateway, "elasticsearch mget: %d answers for %d ids", len(out.Docs), n)
	}
	for _, d := range out.Docs {
		if len(d.Error) > 0 {
			typ, reason := parseESError([]byte(`{"error":` + string(d.Error) + `}`))
			status := http.StatusBadGateway
			if typ == "index_not_found_exception" {
				status = http.StatusNotFound
			}
			return nil, classifyStatus("mget", status, nil, typ, reason)
		}
	}
	return out.Docs, nil
}
