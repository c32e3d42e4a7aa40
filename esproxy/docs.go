package esproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/tusou/tusou/apierr"
)

// Doc is one image document. On write, ID and Vector are required and the
// provenance fields are ignored (esproxy stamps the provenance EnsureIndex
// accepted); on read, Vector is always nil: vectors never leave esproxy.
type Doc struct {
	// ID is the document _id: by default the hex SHA-256 of the image bytes,
	// so re-ingesting an image is idempotent. At most 512 bytes.
	ID string `json:"id"`
	// Vector is the L2-normalised embedding (write only).
	Vector []float32 `json:"-"`
	// ContentType is the image's media type, e.g. "image/jpeg".
	ContentType string `json:"content_type,omitempty"`
	// Width and Height are the decoded image size in pixels.
	Width  int `json:"width,omitempty"`
	Height int `json:"height,omitempty"`
	// Bytes is the image's size in bytes.
	Bytes int64 `json:"bytes,omitempty"`
	// SHA256 is the hex SHA-256 of the image bytes (also when ID is the client's).
	SHA256 string `json:"sha256,omitempty"`
	// Metadata is the client's free-form metadata, filterable by key
	// (KNNQuery.Filter). Leaves are strings, numbers, booleans or lists of
	// them; numbers read back as json.Number so they round-trip exactly.
	Metadata map[string]any `json:"metadata,omitempty"`
	// CreatedAt is when the document was first stored; zero on write means now.
	CreatedAt time.Time `json:"created_at"`
	// Model, ModelVersion and Dims are the provenance of the vector (read only).
	Model        string `json:"model,omitempty"`
	ModelVersion string `json:"model_version,omitempty"`
	Dims         int    `json:"dims,omitempty"`
}

// Result is the outcome of writing one document.
type Result string

// Write results.
const (
	// Created: the document is new and stored.
	Created Result = "created"
	// Exists: a document with this ID was already stored and was left as is
	// (op_type=create). With content-hash IDs this is a duplicate image.
	Exists Result = "exists"
	// Failed: this item was not stored; ItemResult.Err says why.
	Failed Result = "error"
)

// ItemResult is the outcome of one Bulk item, in input order.
type ItemResult struct {
	ID     string
	Result Result
	// Err is an *apierr.Error when Result is Failed, else nil.
	Err error
}

// maxIDBytes is Elasticsearch's _id limit.
const maxIDBytes = 512

// unitTolerance mirrors Elasticsearch's dot_product check (|‖v‖²-1| ≤ 1e-4).
const unitTolerance = 1e-4

// Index stores doc unless a document with its ID exists (op_type=create), so
// re-ingesting the same image returns Exists and overwrites nothing. refresh
// "" means Config.Refresh (wait_for: searchable when this returns, via the
// coalesced refresh). An Exists answer waits for the refresh too: the
// document that exists may still be in flight from a concurrent or a
// refresh=false write.
func (c *Client) Index(ctx context.Context, doc Doc, refresh string) (result Result, err error) {
	defer c.observe("index", time.Now(), &err)
	p, err := c.checkProvenance()
	if err != nil {
		return "", err
	}
	if refresh, err = c.refreshParam(refresh); err != nil {
		return "", err
	}
	if err := c.validateDoc(&doc); err != nil {
		return "", err
	}
	body, err := c.appendSource(make([]byte, 0, c.docSizeHint()), &doc, p, time.Now())
	if err != nil {
		return "", err
	}
	wctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	// No refresh parameter: Elasticsearch's refresh=wait_for would park the
	// request until the next scheduled refresh (up to a second);
	// waitSearchable coalesces an explicit one instead.
	res, err := c.perform(wctx, "index", esapi.CreateRequest{
		Index:        c.Target(),
		DocumentID:   escapeID(doc.ID),
		Body:         bytes.NewReader(body),
		RequireAlias: c.requireAlias(), // never auto-create an unmapped index named like the alias
		FilterPath:   []string{"result"},
	}, 409)
	if err != nil {
		return "", err
	}
	if result, err = createOutcome(res); err != nil {
		return "", err
	}
	// The caller's context, not the write's timeout: the refresher bounds
	// the refresh itself.
	if err := c.waitSearchable(ctx, refresh); err != nil {
		return "", err
	}
	return result, nil
}

// createOutcome reads a create answer (Created, or Exists on a version
// conflict) and closes the body, read to the end so the connection is reused
// while the caller waits for the refresh.
func createOutcome(res *esapi.Response) (Result, error) {
	defer res.Body.Close()
	b := readBody(res.Body, 64<<10)
	if res.StatusCode != 409 {
		return Created, nil
	}
	if typ, _ := parseESError(b); typ != "version_conflict_engine_exception" {
		return "", statusError("index", res.StatusCode, res.Header, b)
	}
	return Exists, nil
}

// Bulk stores docs in one _bulk request with op_type=create and returns one
// result per doc, in order. Invalid docs fail alone (they are not sent).
// The error is non-nil only when the request as a whole failed, or when the
// documents were stored but the refresh that makes them searchable failed
// (code CodeRefreshFailed). refresh "" means Config.Refresh; pass "false"
// to trade searchable-on-success for throughput.
func (c *Client) Bulk(ctx context.Context, docs []Doc, refresh string) (items []ItemResult, err error) {
	defer c.observe("bulk", time.Now(), &err)
	p, err := c.checkProvenance()
	if err != nil {
		return nil, err
	}
	if refresh, err = c.refreshParam(refresh); err != nil {
		return nil, err
	}
	items = make([]ItemResult, len(docs))
	sent := make([]int, 0, len(docs)) // sent[k] = index in docs of the k-th bulk item
	body := make([]byte, 0, len(docs)*(c.docSizeHint()+100))
	now := time.Now()
	for i := range docs {
		d := &docs[i]
		items[i].ID = d.ID
		if err := c.validateDoc(d); err != nil {
			items[i].Result, items[i].Err = Failed, err
			continue
		}
		mark := len(body)
		body = append(body, `{"create":{"_id":`...)
		body = appendString(body, d.ID)
		body = append(body, "}}\n"...)
		if body, err = c.appendSource(body, d, p, now); err != nil {
			body = body[:mark]
			items[i].Result, items[i].Err = Failed, err
			continue
		}
		body = append(body, '\n')
		sent = append(sent, i)
	}
	defer func() {
		for _, it := range items {
			c.metrics.items.WithLabelValues(string(it.Result)).Inc()
		}
	}()
	if len(sent) == 0 {
		return items, nil
	}

	wctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	res, err := c.perform(wctx, "bulk", esapi.BulkRequest{
		Index:        c.Target(),
		Body:         bytes.NewReader(body),
		RequireAlias: c.requireAlias(),
		// Only what we read: a 500-item answer shrinks from ~150 KB to ~10 KB.
		FilterPath: []string{"errors", "items.*.status", "items.*.error.type", "items.*.error.reason"},
	})
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var out struct {
		Items []map[string]struct {
			Status int `json:"status"`
			Error  struct {
				Type   string `json:"type"`
				Reason string `json:"reason"`
			} `json:"error"`
		} `json:"items"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return nil, apierr.Wrap(err, apierr.BadGateway, CodeBadGateway, "elasticsearch bulk: unreadable answer")
	}
	if len(out.Items) != len(sent) {
		return nil, apierr.New(apierr.BadGateway, CodeBadGateway,
			"elasticsearch bulk answered %d items for %d sent", len(out.Items), len(sent))
	}
	for k, i := range sent {
		for _, r := range out.Items[k] { // one key: the op name
			switch {
			case r.Status >= 200 && r.Status < 300:
				items[i].Result = Created
			case r.Status == 409 && r.Error.Type == "version_conflict_engine_exception":
				items[i].Result = Exists
			default:
				items[i].Result = Failed
				items[i].Err = classifyStatus("document", r.Status, nil, r.Error.Type, r.Error.Reason)
			}
		}
	}
	for _, it := range items {
		if it.Result == Created || it.Result == Exists {
			if err := c.waitSearchable(ctx, refresh); err != nil {
				return nil, err
			}
			break
		}
	}
	return items, nil
}

// Get returns the document without its vector, or NotFound.
func (c *Client) Get(ctx context.Context, id string) (doc Doc, err error) {
	defer c.observe("get", time.Now(), &err)
	if err := checkID(id); err != nil {
		return doc, err
	}
	ctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	res, err := c.perform(ctx, "get", esapi.GetRequest{
		Index:          c.Target(),
		DocumentID:     escapeID(id),
		SourceExcludes: c.excludes,
		FilterPath:     []string{"_id", "found", "_source", "error", "status"},
	}, 404)
	if err != nil {
		return doc, err
	}
	defer res.Body.Close()
	if res.StatusCode == 404 {
		return doc, notFound("get", id, res)
	}
	var out struct {
		ID     string          `json:"_id"`
		Source json.RawMessage `json:"_source"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return doc, apierr.Wrap(err, apierr.BadGateway, CodeBadGateway, "elasticsearch get: unreadable answer")
	}
	return decodeSource(out.ID, out.Source)
}

// Delete removes the document, or returns NotFound. refresh "" means
// Config.Refresh (wait_for: gone from search results when this returns, via
// the coalesced refresh).
func (c *Client) Delete(ctx context.Context, id, refresh string) (err error) {
	defer c.observe("delete", time.Now(), &err)
	if err := checkID(id); err != nil {
		return err
	}
	if refresh, err = c.refreshParam(refresh); err != nil {
		return err
	}
	wctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	res, err := c.perform(wctx, "delete", esapi.DeleteRequest{
		Index:      c.Target(),
		DocumentID: escapeID(id),
		FilterPath: []string{"result", "error", "status"},
	}, 404)
	if err != nil {
		return err
	}
	if res.StatusCode == 404 {
		defer res.Body.Close()
		return notFound("delete", id, res)
	}
	readBody(res.Body, 64<<10) // to the end: the connection is reused
	res.Body.Close()
	return c.waitSearchable(ctx, refresh)
}

// notFound tells a missing document from a missing index.
func notFound(op, id string, res *esapi.Response) error {
	b := readBody(res.Body, 64<<10)
	if typ, _ := parseESError(b); typ != "" {
		return statusError(op, res.StatusCode, res.Header, b)
	}
	return apierr.New(apierr.NotFound, CodeDocNotFound, "document %q not found", id)
}

// docSource is the stored _source as read back.
type docSource struct {
	ContentType  string          `json:"content_type"`
	Width        int             `json:"width"`
	Height       int             `json:"height"`
	Bytes        int64           `json:"bytes"`
	SHA256       string          `json:"sha256"`
	Metadata     map[string]any  `json:"metadata"`
	CreatedAt    json.RawMessage `json:"created_at"`
	Model        string          `json:"model"`
	ModelVersion string          `json:"model_version"`
	Dims         int             `json:"dims"`
}

// decodeSource turns a _source (vector already excluded) into a Doc.
func decodeSource(id string, raw json.RawMessage) (Doc, error) {
	var s docSource
	if len(raw) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber() // metadata numbers round-trip exactly (int64 ids!)
		if err := dec.Decode(&s); err != nil {
			return Doc{}, apierr.Wrap(err, apierr.BadGateway, CodeBadGateway, "document %q has an unreadable _source", id)
		}
	}
	return Doc{
		ID: id, ContentType: s.ContentType, Width: s.Width, Height: s.Height, Bytes: s.Bytes,
		SHA256: s.SHA256, Metadata: s.Metadata, CreatedAt: parseDate(s.CreatedAt),
		Model: s.Model, ModelVersion: s.ModelVersion, Dims: s.Dims,
	}, nil
}

// parseDate reads an Elasticsearch date as stored in _source: an ISO-8601
// string or epoch milliseconds (other writers may use either). Unreadable
// dates come back as zero rather than failing the read.
func parseDate(raw json.RawMessage) time.Time {
	if len(raw) == 0 {
		return time.Time{}
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02"} {
			if t, err := time.Parse(layout, s); err == nil {
				return t.UTC()
			}
		}
		if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.UnixMilli(ms).UTC()
		}
		return time.Time{}
	}
	var ms json.Number
	if json.Unmarshal(raw, &ms) == nil {
		if v, err := ms.Int64(); err == nil {
			return time.UnixMilli(v).UTC()
		}
	}
	return time.Time{}
}

func (c *Client) refreshParam(r string) (string, error) {
	if _, err := checkRefresh(r); err != nil {
		return "", apierr.Wrap(err, apierr.InvalidArgument, "invalid_refresh", "%s", err.Error())
	}
	if r == "" {
		return c.cfg.Refresh, nil
	}
	return r, nil
}

// escapeID makes a document id one path segment of an Elasticsearch URL.
// esapi writes DocumentID into the path as it is, so without this a '#' or
// '?' in an id would cut the path (GET a#b reads document a), a '/' would
// add segments and ".." would climb to another endpoint. Elasticsearch
// decodes the segment back to the id.
func escapeID(id string) string {
	switch id {
	case ".", "..":
		// Dot segments are resolved by URL normalisation, not taken as ids.
		return strings.Repeat("%2E", len(id))
	}
	return url.PathEscape(id)
}

func checkID(id string) error {
	switch {
	case id == "":
		return apierr.New(apierr.InvalidArgument, CodeInvalidDoc, "document id must not be empty")
	case len(id) > maxIDBytes:
		return apierr.New(apierr.InvalidArgument, CodeInvalidDoc, "document id is %d bytes; at most %d", len(id), maxIDBytes)
	case !utf8.ValidString(id):
		return apierr.New(apierr.InvalidArgument, CodeInvalidDoc, "document id must be valid UTF-8")
	}
	return nil
}

// validateDoc checks what Elasticsearch would refuse later, so a bad item
// fails alone with a clear message.
func (c *Client) validateDoc(d *Doc) error {
	if err := checkID(d.ID); err != nil {
		return err
	}
	if err := c.checkVector(d.Vector, "vector"); err != nil {
		return err
	}
	if d.Width < 0 || d.Height < 0 || d.Bytes < 0 {
		return apierr.New(apierr.InvalidArgument, CodeInvalidDoc, "document %q: width, height and bytes must be >= 0", d.ID)
	}
	return nil
}

// checkVector validates dims, finiteness and, for the similarity in use,
// what Elasticsearch requires (non-zero for cosine, unit length for dot_product).
func (c *Client) checkVector(v []float32, what string) error {
	code := CodeInvalidDoc
	if what != "vector" {
		code = CodeInvalidQuery
	}
	if len(v) != c.cfg.Dims {
		return apierr.New(apierr.InvalidArgument, code, "%s has %d dims; the index has %d", what, len(v), c.cfg.Dims)
	}
	var sq float64
	for i, f := range v {
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return apierr.New(apierr.InvalidArgument, code, "%s[%d] is not a finite number", what, i)
		}
		sq += float64(f) * float64(f)
	}
	switch {
	case sq == 0:
		return apierr.New(apierr.InvalidArgument, code, "%s is all zeros", what)
	case c.cfg.Similarity == "dot_product" && math.Abs(sq-1) > unitTolerance:
		return apierr.New(apierr.InvalidArgument, code, "%s is not unit length (|v|^2 = %g); dot_product needs normalised vectors", what, sq)
	}
	return nil
}

// docSizeHint estimates one encoded document: ~11 bytes per float plus fields.
func (c *Client) docSizeHint() int { return c.cfg.Dims*12 + 512 }

// appendSource appends d's _source JSON: hand-written because the vector is
// 95% of the bytes and encoding/json would reflect over it element by element.
func (c *Client) appendSource(b []byte, d *Doc, p *Provenance, now time.Time) ([]byte, error) {
	b = append(b, `{"model":`...)
	b = appendString(b, p.Model)
	b = append(b, `,"model_version":`...)
	b = appendString(b, p.Version)
	b = append(b, `,"dims":`...)
	b = strconv.AppendInt(b, int64(p.Dims), 10)
	if d.ContentType != "" {
		b = append(b, `,"content_type":`...)
		b = appendString(b, d.ContentType)
	}
	if d.Width > 0 {
		b = append(b, `,"width":`...)
		b = strconv.AppendInt(b, int64(d.Width), 10)
	}
	if d.Height > 0 {
		b = append(b, `,"height":`...)
		b = strconv.AppendInt(b, int64(d.Height), 10)
	}
	if d.Bytes > 0 {
		b = append(b, `,"bytes":`...)
		b = strconv.AppendInt(b, d.Bytes, 10)
	}
	if d.SHA256 != "" {
		b = append(b, `,"sha256":`...)
		b = appendString(b, d.SHA256)
	}
	created := d.CreatedAt
	if created.IsZero() {
		created = now
	}
	b = append(b, `,"created_at":"`...)
	b = created.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = append(b, '"')
	if len(d.Metadata) > 0 {
		m, err := json.Marshal(d.Metadata)
		if err != nil {
			return b, apierr.Wrap(err, apierr.InvalidArgument, CodeInvalidDoc, "document %q: metadata is not valid JSON: %v", d.ID, err)
		}
		b = append(b, `,"metadata":`...)
		b = append(b, m...)
	}
	b = append(b, `,"`...)
	b = append(b, c.cfg.VectorField...) // validated [a-z0-9_]
	b = append(b, `":`...)
	b = AppendVector(b, d.Vector)
	return append(b, '}'), nil
}

// AppendVector appends v as a JSON array. 'g' with precision -1 at bitSize
// 32 is the shortest text that parses back to the identical float32
// (~9-11 bytes), half of what float64 formatting would send. The sidecar
// writes vectors with it too, so both APIs store identical bytes.
func AppendVector(b []byte, v []float32) []byte {
	b = append(b, '[')
	for i, f := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendFloat(b, float64(f), 'g', -1, 32)
	}
	return append(b, ']')
}

// appendString appends s as a JSON string, replacing invalid UTF-8 with
// U+FFFD like encoding/json.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		ch := s[i]
		if ch < utf8.RuneSelf {
			if ch >= 0x20 && ch != '"' && ch != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch ch {
			case '"', '\\':
				b = append(b, '\\', ch)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[ch>>4], hex[ch&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func ptr[T any](v T) *T { return &v }

// String implements fmt.Stringer for logs.
func (r ItemResult) String() string {
	if r.Err != nil {
		return fmt.Sprintf("%s: %s (%v)", r.ID, r.Result, r.Err)
	}
	return fmt.Sprintf("%s: %s", r.ID, r.Result)
}
