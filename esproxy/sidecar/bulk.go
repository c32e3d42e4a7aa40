package sidecar

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// bulkItem is one bulk action whose document the sidecar enriches.
type bulkItem struct {
	pos    int    // position among all actions of the request
	action string // index, create or update
	index  string
	id     []byte // raw JSON of _id, nil when absent
	line   []byte // the action line, as sent
	src    []byte // the source line without its line break
	rules  []Rule
	out    []byte   // enriched source, set on success
	err    *esError // set on failure: answered locally, not sent
}

// bulkAction is a parsed action line.
type bulkAction struct {
	name  string
	index string
	id    []byte
}

// serveBulk enriches a _bulk body and forwards it.
//
// The body is read line by line; documents without a rule field are copied
// through byte for byte, and each document with one starts embedding at
// once on its own goroutine (bounded by the embedding slots), so all images
// of a bulk reach the Triton micro-batcher together while the rest of the
// body is still being read. Only when every line is read and every
// embedding done is the rewritten body sent: a malformed line anywhere
// fails the request before Elasticsearch has seen any of it, and items
// whose image is bad are left out and answered by the sidecar, in
// Elasticsearch's per-item error format, merged into Elasticsearch's
// answer at their original positions.
func (s *Sidecar) serveBulk(w http.ResponseWriter, r *http.Request, rt route) {
	start := time.Now()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	body, decoded, err := decodedBody(w, r, s.cfg.MaxBodyBytes)
	if err != nil {
		writeESError(w, r, upstreamError(ctx, err))
		return
	}

	var (
		wg       sync.WaitGroup
		segs     []bulkSegment
		cur      []byte
		n        int
		enriched int
		denials  int
		size     int64
	)
	abort := func(e *esError) {
		cancel()
		wg.Wait()
		writeESError(w, r, e)
	}
	lr := newLineReader(body)
	for {
		line, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			abort(upstreamError(ctx, err))
			return
		}
		size += int64(len(line))
		if isBlank(line) {
			continue
		}
		if line[len(line)-1] != '\n' {
			abort(errNoTrailingNewline)
			return
		}
		act, aerr := parseBulkAction(line, lr.line)
		if aerr != nil {
			abort(aerr)
			return
		}
		pos := n
		n++
		index := act.index
		if index == "" {
			index = rt.Index
		}
		// The write rules, item by item, as Elasticsearch's security
		// answers an item the user may not write: a 403 in its place.
		var denied *esError
		if index != "" {
			denied = s.guard.checkOne(act.name, index)
		}
		deny := func() {
			if len(cur) > 0 {
				segs = append(segs, bulkSegment{raw: cur})
				cur = nil
			}
			segs = append(segs, bulkSegment{item: &bulkItem{pos: pos, action: act.name, index: index, id: act.id, err: denied}})
			denials++
		}
		if act.name == "delete" {
			if denied != nil {
				deny()
			} else {
				cur = append(cur, line...)
			}
			continue
		}
		rules := s.rules.match(index)
		// The action line is only valid until the next read: keep it now.
		switch {
		case denied != nil:
		case len(rules) == 0:
			cur = append(cur, line...)
		default:
			line = append([]byte(nil), line...)
		}
		src, err := lr.next()
		if err == io.EOF {
			abort(errNoTrailingNewline)
			return
		}
		if err != nil {
			abort(upstreamError(ctx, err))
			return
		}
		size += int64(len(src))
		if src[len(src)-1] != '\n' {
			abort(errNoTrailingNewline)
			return
		}
		if denied != nil {
			deny()
			continue
		}
		if len(rules) == 0 {
			cur = append(cur, src...)
			continue
		}
		if !mayNeed(src, rules) {
			cur = append(cur, line...)
			cur = append(cur, src...)
			continue
		}
		if len(cur) > 0 {
			segs = append(segs, bulkSegment{raw: cur})
			cur = nil
		}
		it := &bulkItem{pos: pos, action: act.name, index: index, id: act.id, line: line,
			src: append([]byte(nil), bytes.TrimRight(src, " \t\r\n")...), rules: rules}
		segs = append(segs, bulkSegment{item: it})
		enriched++
		if err := s.acquire(ctx); err != nil {
			if e, ok := err.(*esError); ok && e.Status == http.StatusUnauthorized {
				abort(e) // Elasticsearch refused the client: no item is worth sending
				return
			}
			it.err = toESError(err, KindImage)
			continue
		}
		wg.Add(1)
		go s.enrichBulkItem(ctx, it, &wg)
	}
	if len(cur) > 0 {
		segs = append(segs, bulkSegment{raw: cur})
	}
	wg.Wait()
	s.metrics.bodyBytes.Observe(float64(size))

	bufs := make([][]byte, 0, 2*len(segs))
	var failed []*bulkItem
	for _, sg := range segs {
		switch {
		case sg.item == nil:
			bufs = append(bufs, sg.raw)
		case sg.item.err != nil:
			failed = append(failed, sg.item)
		default:
			bufs = append(bufs, sg.item.line, sg.item.out, newline)
		}
	}
	s.metrics.bulkItems.WithLabelValues("passed").Add(float64(n - enriched - denials))
	s.metrics.bulkItems.WithLabelValues("enriched").Add(float64(enriched - (len(failed) - denials)))
	s.metrics.bulkItems.WithLabelValues("failed").Add(float64(len(failed)))

	out := outRequest{method: r.Method, path: r.URL.EscapedPath(), rawQuery: r.URL.RawQuery, header: r.Header, bufs: bufs}
	if decoded {
		out.dropHeaders = []string{"Content-Encoding"}
	}
	s.answerMerged(w, r, out, "bulk", len(failed), n, func(esBody []byte) ([]byte, error) {
		return mergeBulk(esBody, n, failed, time.Since(start))
	})
}

// answerMerged forwards out and answers with Elasticsearch's reply merged
// with the items that failed here, each in its place. With no local failure
// the reply streams through untouched (the common case); when every item
// failed, Elasticsearch is not called at all.
func (s *Sidecar) answerMerged(w http.ResponseWriter, r *http.Request, out outRequest, what string, nFailed, n int, merge func(esBody []byte) ([]byte, error)) {
	if nFailed == 0 {
		s.forward(w, r, out)
		return
	}
	if nFailed == n {
		b, _ := merge(nil)
		writeJSON(w, r, http.StatusOK, b)
		return
	}
	// The answer must be rewritten: ask for it uncompressed and unfiltered
	// (filter_path could drop the items we merge into).
	out.dropHeaders = append(out.dropHeaders, "Accept-Encoding")
	out.rawQuery = withoutParam(r.URL.RawQuery, "filter_path")
	resp, err := s.up.do(r.Context(), out)
	if err != nil {
		s.upstreamFailed(w, r, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The whole request failed upstream (401, 413, 5xx): that is the answer.
		_ = copyResponse(w, resp)
		return
	}
	esBody, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		s.upstreamFailed(w, r, err)
		return
	}
	merged, err := merge(esBody)
	if err != nil {
		s.log.Error("sidecar: cannot merge the "+what+" answer", zap.Error(err))
		writeESError(w, r, newESError(http.StatusBadGateway, typeUpstream, "unexpected "+what+" answer from Elasticsearch: "+err.Error()))
		return
	}
	for _, k := range []string{"Warning", "X-Opaque-Id", "Trace-Id"} {
		if v := resp.Header.Values(k); len(v) > 0 {
			w.Header()[k] = v
		}
	}
	writeJSON(w, r, http.StatusOK, merged)
}

// maxAnswerBytes bounds an Elasticsearch answer the sidecar reads to
// rewrite (a bulk answer is ~200 bytes per item).
const maxAnswerBytes = 256 << 20

var (
	newline              = []byte("\n")
	errNoTrailingNewline = newESError(http.StatusBadRequest, typeIllegalArg, `The bulk request must be terminated by a newline [\n]`)
)

// bulkSegment is either bytes passed through or one enriched item.
type bulkSegment struct {
	raw  []byte
	item *bulkItem
}

func (s *Sidecar) enrichBulkItem(ctx context.Context, it *bulkItem, wg *sync.WaitGroup) {
	defer wg.Done()
	defer s.release()
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("sidecar: panic enriching a bulk item", zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
			it.err = newESError(http.StatusInternalServerError, typeInternal, "internal error")
		}
	}()
	var (
		out []byte
		err error
	)
	if it.action == "update" {
		out, _, err = s.enrichUpdate(ctx, it.src, it.rules)
	} else {
		out, _, err = s.enrichDoc(ctx, it.src, it.rules)
	}
	if err != nil {
		it.err = toESError(err, KindImage)
		return
	}
	it.out, it.src = out, nil
}

// parseBulkAction reads {"<action>":{"_index":..,"_id":..,...}}.
func parseBulkAction(line []byte, lineNo int) (bulkAction, *esError) {
	var act bulkAction
	malformed := func(detail string) *esError {
		return newESError(http.StatusBadRequest, typeIllegalArg, fmt.Sprintf("Malformed action/metadata line [%d], %s", lineNo, detail))
	}
	count := 0
	var metaRaw []byte
	err := objectMembers(line, func(m member) error {
		count++
		if count == 1 {
			act.name = m.Key
			metaRaw = line[m.ValStart:m.End]
		}
		return nil
	})
	switch {
	case err != nil:
		return act, malformed("expected a JSON object: " + err.Error())
	case count == 0:
		return act, malformed("expected FIELD_NAME but found [END_OBJECT]")
	case count > 1:
		return act, malformed("expected END_OBJECT but found [FIELD_NAME]")
	}
	switch act.name {
	case "index", "create", "update", "delete":
	default:
		return act, malformed(fmt.Sprintf("expected field [create], [delete], [index] or [update] but found [%s]", act.name))
	}
	if len(metaRaw) == 0 || metaRaw[0] != '{' {
		return act, malformed("expected START_OBJECT")
	}
	err = objectMembers(metaRaw, func(m member) error {
		switch m.Key {
		case "_index":
			v, err := unquote(metaRaw[m.ValStart:m.End])
			if err != nil {
				return err
			}
			act.index = v
		case "_id":
			act.id = append([]byte(nil), metaRaw[m.ValStart:m.End]...)
		}
		return nil
	})
	if err != nil {
		return act, malformed(err.Error())
	}
	return act, nil
}

// mergeBulk builds the client's answer: Elasticsearch's items for the
// forwarded actions and the sidecar's errors for the others, in request
// order. esBody is nil when nothing was forwarded.
func mergeBulk(esBody []byte, n int, failed []*bulkItem, took time.Duration) ([]byte, error) {
	return mergeArray(esBody, n, "items", `"errors":true,`, failed,
		func(it *bulkItem) int { return it.pos },
		func(b []byte, it *bulkItem) []byte { return it.appendError(b) }, took)
}

// mergeArray splices locally failed entries into the array arrayKey of
// Elasticsearch's answer (bulk "items", msearch "responses") at their request
// positions, with the sidecar's took; extra is written before the array
// (bulk's "errors":true). Other members of the answer are kept as sent.
func mergeArray[T any](esBody []byte, n int, arrayKey, extra string, failed []T, pos func(T) int, appendFailed func([]byte, T) []byte, took time.Duration) ([]byte, error) {
	var items [][2]int
	var rest [][2]int
	if esBody != nil {
		err := objectMembers(esBody, func(m member) error {
			switch m.Key {
			case arrayKey:
				return arrayElements(esBody[m.ValStart:m.End], func(a, b int) error {
					items = append(items, [2]int{m.ValStart + a, m.ValStart + b})
					return nil
				})
			case "took", "errors":
			default:
				rest = append(rest, [2]int{m.Start, m.End})
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if len(items) != n-len(failed) {
		return nil, fmt.Errorf("Elasticsearch answered %d %s for %d forwarded requests", len(items), arrayKey, n-len(failed))
	}
	out := make([]byte, 0, len(esBody)+len(failed)*256+64)
	out = append(out, `{"took":`...)
	out = strconv.AppendInt(out, took.Milliseconds(), 10)
	out = append(out, ',')
	out = append(out, extra...)
	out = appendQuoted(out, arrayKey)
	out = append(out, ":["...)
	next, f := 0, 0
	for i := 0; i < n; i++ {
		if i > 0 {
			out = append(out, ',')
		}
		if f < len(failed) && pos(failed[f]) == i {
			out = appendFailed(out, failed[f])
			f++
			continue
		}
		out = append(out, esBody[items[next][0]:items[next][1]]...)
		next++
	}
	out = append(out, ']')
	for _, m := range rest {
		out = append(out, ',')
		out = append(out, esBody[m[0]:m[1]]...)
	}
	return append(out, '}'), nil
}

// appendError writes the item's error as Elasticsearch writes a failed item.
func (it *bulkItem) appendError(b []byte) []byte {
	b = append(b, '{')
	b = appendQuoted(b, it.action)
	b = append(b, `:{"_index":`...)
	b = appendQuoted(b, it.index)
	b = append(b, `,"_id":`...)
	if it.id != nil {
		b = append(b, it.id...)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(it.err.Status), 10)
	b = append(b, `,"error":`...)
	b = it.err.appendObject(b)
	return append(b, "}}"...)
}

// withoutParam removes one query parameter, keeping the others as sent.
func withoutParam(rawQuery, name string) string {
	if rawQuery == "" {
		return ""
	}
	var kept []byte
	for _, kv := range bytes.Split([]byte(rawQuery), []byte("&")) {
		k := kv
		if i := bytes.IndexByte(kv, '='); i >= 0 {
			k = kv[:i]
		}
		if uk, err := url.QueryUnescape(string(k)); err == nil && uk == name {
			continue
		}
		if len(kept) > 0 {
			kept = append(kept, '&')
		}
		kept = append(kept, kv...)
	}
	return string(kept)
}
