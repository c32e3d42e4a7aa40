package esproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/tusou/tusou/apierr"
)

// Primitives for comparing and copying a whole index, one page at a time:
// a model switch walks every id of one generation's index and reconciles
// another with it.

// MaxScanPage is the largest page Scan reads (Elasticsearch's default
// index.max_result_window bounds size per request).
const MaxScanPage = 10000

// scanKeepAlive is how long the point in time lives between two pages: the
// caller works on each page (re-embedding it) before asking for the next.
const scanKeepAlive = "10m"

// ScanHit is one document of a scan: its id and the sequence number and
// primary term it had in the scan's point in time, for a later write
// guarded by if_seq_no/if_primary_term.
type ScanHit struct {
	ID          string
	SeqNo       int64
	PrimaryTerm int64
}

// Scan calls fn with every document of the client's target, pageSize at a
// time, as of one point in time opened at the start after a refresh (so
// every write acknowledged before the call is seen; documents written later
// are not, documents deleted later still are). Pages come in
// shard-document order (Elasticsearch 8 refuses sorting on _id); an error
// from fn stops the scan and is returned as is. The point in time is closed
// at the end, also when ctx ends.
func (c *Client) Scan(ctx context.Context, pageSize int, fn func(page []ScanHit) error) (err error) {
	if pageSize < 1 || pageSize > MaxScanPage {
		return apierr.New(apierr.Internal, CodeInvalidQuery, "esproxy: scan page size must be in [1, %d], got %d", MaxScanPage, pageSize)
	}
	// A point in time sees refreshed segments only.
	if err := c.Refresh(ctx); err != nil {
		return err
	}
	pit, err := c.openPIT(ctx)
	if err != nil {
		return err
	}
	defer func() {
		// The scan's context may be over; the point in time still holds
		// segments until closed.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.RequestTimeout)
		defer cancel()
		c.closePIT(cctx, pit)
	}()
	var after json.RawMessage
	for {
		var page []ScanHit
		page, pit, after, err = c.scanPage(ctx, pit, pageSize, after)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		if err := fn(page); err != nil {
			return err
		}
		if len(page) < pageSize {
			return nil
		}
	}
}

// ScanIDs is Scan for callers that need only the ids.
func (c *Client) ScanIDs(ctx context.Context, pageSize int, fn func(ids []string) error) error {
	return c.Scan(ctx, pageSize, func(page []ScanHit) error {
		ids := make([]string, len(page))
		for i, h := range page {
			ids[i] = h.ID
		}
		return fn(ids)
	})
}

func (c *Client) openPIT(ctx context.Context) (id string, err error) {
	defer c.observe("open_pit", time.Now(), &err)
	ctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	res, err := c.perform(ctx, "open point in time", esapi.OpenPointInTimeRequest{
		Index:     []string{c.Target()},
		KeepAlive: scanKeepAlive,
	})
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var out struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || out.ID == "" {
		return "", apierr.Wrap(err, apierr.BadGateway, CodeBadGateway, "elasticsearch open point in time: unreadable answer")
	}
	return out.ID, nil
}

func (c *Client) closePIT(ctx context.Context, id string) {
	var err error
	defer c.observe("close_pit", time.Now(), &err)
	b, _ := json.Marshal(map[string]string{"id": id})
	res, err := c.perform(ctx, "close point in time", esapi.ClosePointInTimeRequest{Body: bytes.NewReader(b)}, 404)
	if err != nil {
		// It expires on its own after scanKeepAlive.
		c.log.Debug("closing a point in time failed")
		return
	}
	readBody(res.Body, 64<<10)
	res.Body.Close()
}

// scanPage reads the page after `after` (nil: the first) and returns it with
// the point in time id to use next (Elasticsearch may change it) and the
// sort values of the last hit.
func (c *Client) scanPage(ctx context.Context, pit string, size int, after json.RawMessage) (page []ScanHit, nextPIT string, last json.RawMessage, err error) {
	defer c.observe("scan", time.Now(), &err)
	b := make([]byte, 0, 256+len(pit))
	b = append(b, `{"size":`...)
	b = strconv.AppendInt(b, int64(size), 10)
	b = append(b, `,"pit":{"id":`...)
	b = appendString(b, pit)
	b = append(b, `,"keep_alive":"`+scanKeepAlive+`"},"sort":[{"_shard_doc":"asc"}],"_source":false,"seq_no_primary_term":true,"track_total_hits":false`...)
	if after != nil {
		b = append(b, `,"search_after":`...)
		b = append(b, after...)
	}
	b = append(b, '}')
	ctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	res, err := c.perform(ctx, "scan", esapi.SearchRequest{
		Body: bytes.NewReader(b),
		// A page missing a shard would make the ids of that shard look
		// deleted.
		AllowPartialSearchResults: ptr(false),
		FilterPath:                []string{"pit_id", "hits.hits._id", "hits.hits._seq_no", "hits.hits._primary_term", "hits.hits.sort"},
	})
	if err != nil {
		return nil, pit, nil, err
	}
	defer res.Body.Close()
	var out struct {
		PITID string `json:"pit_id"`
		Hits  struct {
			Hits []struct {
				ID          string          `json:"_id"`
				SeqNo       int64           `json:"_seq_no"`
				PrimaryTerm int64           `json:"_primary_term"`
				Sort        json.RawMessage `json:"sort"`
			} `json:"hits"`
		} `json:"hits"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return nil, pit, nil, apierr.Wrap(err, apierr.BadGateway, CodeBadGateway, "elasticsearch scan: unreadable answer")
	}
	if out.PITID != "" {
		pit = out.PITID
	}
	page = make([]ScanHit, len(out.Hits.Hits))
	for i, h := range out.Hits.Hits {
		page[i] = ScanHit{ID: h.ID, SeqNo: h.SeqNo, PrimaryTerm: h.PrimaryTerm}
		last = h.Sort
	}
	if len(page) > 0 && len(last) == 0 {
		return nil, pit, nil, apierr.New(apierr.BadGateway, CodeBadGateway, "elasticsearch scan: hits without sort values")
	}
	return page, pit, last, nil
}

// StoredDoc is a document as stored, with the sequence number and primary
// term of that version (for a write guarded by if_seq_no/if_primary_term).
type StoredDoc struct {
	Doc
	SeqNo       int64
	PrimaryTerm int64
}

// GetDocs reads the documents with the given ids (1..MaxExistsIDs, vectors
// left out) in realtime, in the order given; ids that are not stored are
// left out of the answer.
func (c *Client) GetDocs(ctx context.Context, ids []string) (docs []StoredDoc, err error) {
	defer c.observe("mget", time.Now(), &err)
	if len(ids) == 0 || len(ids) > MaxExistsIDs {
		return nil, apierr.New(apierr.InvalidArgument, CodeInvalidQuery, "get docs takes 1..%d ids, got %d", MaxExistsIDs, len(ids))
	}
	for _, id := range ids {
		if err := checkID(id); err != nil {
			return nil, err
		}
	}
	b := mgetBody(ids)
	ctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	res, err := c.perform(ctx, "mget", esapi.MgetRequest{
		Index:          c.Target(),
		Body:           bytes.NewReader(b),
		SourceExcludes: c.excludes,
		FilterPath:     []string{"docs._id", "docs.found", "docs._seq_no", "docs._primary_term", "docs._source", "docs.error"},
	})
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	found, err := decodeMget(res.Body, len(ids))
	if err != nil {
		return nil, err
	}
	docs = make([]StoredDoc, 0, len(ids))
	for _, d := range found {
		if !d.Found {
			continue
		}
		doc, err := decodeSource(d.ID, d.Source)
		if err != nil {
			return nil, err
		}
		docs = append(docs, StoredDoc{Doc: doc, SeqNo: d.SeqNo, PrimaryTerm: d.PrimaryTerm})
	}
	return docs, nil
}

// DeleteResult is the outcome of DeleteIfUnchanged.
type DeleteResult string

// Outcomes of DeleteIfUnchanged.
const (
	// Deleted: the document was that version and is gone now.
	Deleted DeleteResult = "deleted"
	// Changed: the document was written since (a version conflict) and is
	// left as is.
	Changed DeleteResult = "changed"
	// Gone: there was no such document (deleted already).
	Gone DeleteResult = "gone"
)

// DeleteIfUnchanged deletes the document only while it is still the
// version with seqNo and primaryTerm. A conflict (Changed) or a missing
// document (Gone) is not an error: someone else's write decided its fate.
// Not waited for (refresh=false).
func (c *Client) DeleteIfUnchanged(ctx context.Context, id string, seqNo, primaryTerm int64) (result DeleteResult, err error) {
	defer c.observe("delete", time.Now(), &err)
	if err := checkID(id); err != nil {
		return "", err
	}
	seq, term := int(seqNo), int(primaryTerm)
	ctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	res, err := c.perform(ctx, "delete", esapi.DeleteRequest{
		Index:         c.Target(),
		DocumentID:    escapeID(id),
		IfSeqNo:       &seq,
		IfPrimaryTerm: &term,
		FilterPath:    []string{"result", "error", "status"},
	}, 404, 409)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b := readBody(res.Body, 64<<10)
	switch res.StatusCode {
	case 409:
		if typ, _ := parseESError(b); typ != "version_conflict_engine_exception" {
			return "", statusError("delete", res.StatusCode, res.Header, b)
		}
		return Changed, nil
	case 404:
		if typ, _ := parseESError(b); typ != "" {
			return "", statusError("delete", res.StatusCode, res.Header, b) // the index is gone
		}
		return Gone, nil
	}
	return Deleted, nil
}

// Refresh makes everything written to the client's target so far
// searchable (and countable) now.
func (c *Client) Refresh(ctx context.Context) error {
	ctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	return c.refreshIndex(ctx, c.Target())
}

// Count returns the number of documents in the client's target after
// refreshing it, so writes acknowledged before the call are counted.
func (c *Client) Count(ctx context.Context) (n int64, err error) {
	n, found, err := c.CountIndex(ctx, c.Target())
	if err == nil && !found {
		err = apierr.New(apierr.NotFound, CodeIndexNotFound, "elasticsearch index not found: %s", c.Target())
	}
	return n, err
}

// CountIndex is Count for any index; found is false (and n 0) when it does
// not exist.
func (c *Client) CountIndex(ctx context.Context, index string) (n int64, found bool, err error) {
	return c.count(ctx, index, nil)
}

// CountCreatedBefore is Count restricted to documents whose created_at is
// before t: documents written since are left out, so two indices written
// one after the other by the same writers compare equal while writes are
// still in flight.
func (c *Client) CountCreatedBefore(ctx context.Context, t time.Time) (n int64, err error) {
	body := []byte(`{"query":{"range":{"created_at":{"lt":"` + t.UTC().Format(time.RFC3339Nano) + `"}}}}`)
	n, found, err := c.count(ctx, c.Target(), body)
	if err == nil && !found {
		err = apierr.New(apierr.NotFound, CodeIndexNotFound, "elasticsearch index not found: %s", c.Target())
	}
	return n, err
}

// count refreshes index, then counts the documents matching body (nil: all).
func (c *Client) count(ctx context.Context, index string, body []byte) (n int64, found bool, err error) {
	ctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	if err := c.refreshIndex(ctx, index); err != nil {
		if e := apierr.As(err); e != nil && e.Code == CodeIndexNotFound {
			return 0, false, nil
		}
		return 0, false, err
	}
	defer c.observe("count", time.Now(), &err)
	req := esapi.CountRequest{Index: []string{index}, FilterPath: []string{"count"}}
	if body != nil {
		req.Body = bytes.NewReader(body)
	}
	res, err := c.perform(ctx, "count", req)
	if err != nil {
		return 0, false, err
	}
	defer res.Body.Close()
	var out struct {
		Count *int64 `json:"count"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || out.Count == nil {
		return 0, false, apierr.Wrap(err, apierr.BadGateway, CodeBadGateway, "elasticsearch count: unreadable answer")
	}
	return *out.Count, true, nil
}
