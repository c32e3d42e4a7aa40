package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/tusou/tusou/esproxy"
	"go.uber.org/zap"
)

// builder is one query_vector_builder the sidecar computes.
type builder struct {
	// obj is the object holding query_vector_builder (a knn section, a knn
	// query or a knn retriever); it receives query_vector.
	obj   map[string]any
	kind  string // text, image or image_url
	field string // names the input in errors
	value []byte
	vec   []float32
}

var qvbKey = []byte(`"query_vector_builder"`)

// rewriteSearch replaces every query_vector_builder the sidecar answers
// with a plain query_vector, wherever it sits: a top-level knn section
// (object or array), a knn query anywhere inside query, or a knn retriever.
// Bodies without a builder are returned as they are, unparsed.
func (s *Sidecar) rewriteSearch(ctx context.Context, body []byte) ([]byte, bool, error) {
	if !bytes.Contains(body, qvbKey) {
		return body, false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // numbers round-trip exactly
	var root any
	if err := dec.Decode(&root); err != nil {
		return nil, false, newESError(http.StatusBadRequest, typeParsing, "failed to parse the search body: "+err.Error())
	}
	var bs []*builder
	if err := s.collectBuilders(root, &bs); err != nil {
		return nil, false, err
	}
	if len(bs) == 0 {
		return body, false, nil
	}
	if err := s.computeBuilders(ctx, bs); err != nil {
		return nil, false, err
	}
	for _, b := range bs {
		delete(b.obj, "query_vector_builder")
		b.obj["query_vector"] = json.RawMessage(esproxy.AppendVector(nil, b.vec))
		s.addRescore(b.obj)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(root); err != nil {
		return nil, false, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), true, nil
}

// addRescore asks for exact scores on a kNN search the sidecar built, as
// the native API gets them, unless the client chose its own rescore_vector.
// It is added whatever the field's mapping: knowing it would cost a mapping
// lookup per index pattern, and Elasticsearch 8.19 ignores rescore_vector on
// float (hnsw, flat) fields (verified: identical hits and scores), so it
// only acts where the vectors are quantised.
func (s *Sidecar) addRescore(knn map[string]any) {
	if s.oversample <= 0 {
		return
	}
	if _, set := knn["rescore_vector"]; set {
		return
	}
	knn["rescore_vector"] = map[string]any{"oversample": s.oversample}
}

// collectBuilders walks the decoded body for objects with a
// query_vector_builder the sidecar owns. A text_embedding builder naming
// another model is left to Elasticsearch's own inference.
func (s *Sidecar) collectBuilders(v any, out *[]*builder) error {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			if err := s.collectBuilders(e, out); err != nil {
				return err
			}
		}
	case map[string]any:
		for k, e := range x {
			if k == "query_vector_builder" {
				continue
			}
			if err := s.collectBuilders(e, out); err != nil {
				return err
			}
		}
		q, ok := x["query_vector_builder"]
		if !ok {
			return nil
		}
		b, err := s.parseBuilder(q)
		if err != nil || b == nil {
			return err
		}
		if _, both := x["query_vector"]; both {
			return newESError(http.StatusBadRequest, typeIllegalArg, "cannot provide both [query_vector_builder] and [query_vector]")
		}
		b.obj = x
		*out = append(*out, b)
	}
	return nil
}

func badBuilder(format string, args ...any) error {
	return newESError(http.StatusBadRequest, typeParsing, "[query_vector_builder] "+fmt.Sprintf(format, args...))
}

// parseBuilder reads {"text_embedding":{"model_id","model_text"}} or
// {"image_embedding":{"model_id","image"|"url"}}. It returns nil for
// builders Elasticsearch should handle.
func (s *Sidecar) parseBuilder(q any) (*builder, error) {
	m, ok := q.(map[string]any)
	if !ok || len(m) != 1 {
		return nil, badBuilder("must be an object with exactly one of [text_embedding] or [image_embedding]")
	}
	str := func(spec map[string]any, key string) (string, bool, error) {
		v, ok := spec[key]
		if !ok {
			return "", false, nil
		}
		sv, ok := v.(string)
		if !ok {
			return "", true, badBuilder("[%s] must be a string", key)
		}
		return sv, true, nil
	}
	if t, ok := m["text_embedding"]; ok {
		spec, ok := t.(map[string]any)
		if !ok {
			return nil, badBuilder("[text_embedding] must be an object")
		}
		model, _, err := str(spec, "model_id")
		if err != nil {
			return nil, err
		}
		if model != s.cfg.TextModelID {
			return nil, nil // an Elasticsearch-deployed model
		}
		text, has, err := str(spec, "model_text")
		if err != nil {
			return nil, err
		}
		if !has {
			return nil, badBuilder("[text_embedding] needs [model_text]")
		}
		return &builder{kind: KindText, field: "query_vector_builder.text_embedding.model_text", value: []byte(text)}, nil
	}
	if t, ok := m["image_embedding"]; ok {
		spec, ok := t.(map[string]any)
		if !ok {
			return nil, badBuilder("[image_embedding] must be an object")
		}
		model, hasModel, err := str(spec, "model_id")
		if err != nil {
			return nil, err
		}
		if hasModel && model != s.cfg.ImageModelID {
			return nil, badBuilder("[image_embedding] unknown model_id [%s]; this gateway serves [%s]", model, s.cfg.ImageModelID)
		}
		img, hasImg, err := str(spec, "image")
		if err != nil {
			return nil, err
		}
		u, hasURL, err := str(spec, "url")
		if err != nil {
			return nil, err
		}
		switch {
		case hasImg && hasURL:
			return nil, badBuilder("[image_embedding] takes one of [image] or [url], not both")
		case hasImg:
			return &builder{kind: KindImage, field: "query_vector_builder.image_embedding.image", value: []byte(img)}, nil
		case hasURL:
			return &builder{kind: KindImageURL, field: "query_vector_builder.image_embedding.url", value: []byte(u)}, nil
		}
		return nil, badBuilder("[image_embedding] needs [image] (base64) or [url]")
	}
	return nil, nil // another builder type: Elasticsearch decides
}

// computeBuilders embeds all builders concurrently (one search may hold
// several kNN sections; the batcher groups them).
func (s *Sidecar) computeBuilders(ctx context.Context, bs []*builder) error {
	errs := make([]error, len(bs))
	var wg sync.WaitGroup
	for i, b := range bs {
		if err := s.acquire(ctx); err != nil {
			errs[i] = err
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.release()
			defer func() {
				if p := recover(); p != nil {
					s.log.Error("sidecar: panic computing a query vector", zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
					errs[i] = newESError(http.StatusInternalServerError, typeInternal, "internal error")
				}
			}()
			b.vec, errs[i] = s.embedValue(ctx, b.kind, b.field, b.value)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// serveSearch computes the query vectors of one search and forwards it;
// the answer streams back unchanged.
func (s *Sidecar) serveSearch(w http.ResponseWriter, r *http.Request) {
	body, decoded, err := readAllBody(w, r, s.cfg.MaxBodyBytes)
	if err != nil {
		writeESError(w, r, upstreamError(r.Context(), err))
		return
	}
	if bytes.Count(body, qvbKey) > s.cfg.MaxQueryBuilders {
		writeESError(w, r, tooManyBuilders(s.cfg.MaxQueryBuilders))
		return
	}
	newBody, changed, err := s.rewriteSearch(r.Context(), body)
	if err != nil {
		writeESError(w, r, toESError(err, KindImage))
		return
	}
	out := outRequest{method: r.Method, path: r.URL.EscapedPath(), rawQuery: r.URL.RawQuery, header: r.Header, bufs: [][]byte{newBody}}
	if decoded || changed {
		out.dropHeaders = []string{"Content-Encoding"}
	}
	s.forward(w, r, out)
}

// msearchItem is one header/body pair of an _msearch whose body the sidecar rewrites.
type msearchItem struct {
	pos    int
	header []byte
	body   []byte
	out    []byte
	err    *esError
}

// serveMsearch rewrites the bodies of an _msearch that carry builders,
// after the whole body is read and its builders counted (at most
// sidecar.max_query_builders), through a bounded pool (rewriteMsearchItems).
// A search whose builder fails (a bad image) is answered by the sidecar in
// place, as Elasticsearch answers a failing search inside an msearch; the
// others run.
func (s *Sidecar) serveMsearch(w http.ResponseWriter, r *http.Request, rt route) {
	start := time.Now()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	body, decoded, err := decodedBody(w, r, s.cfg.MaxBodyBytes)
	if err != nil {
		writeESError(w, r, upstreamError(ctx, err))
		return
	}
	var (
		segs     []msearchSegment
		items    []*msearchItem
		builders int
		cur      []byte
		n        int
	)
	lr := newLineReader(body)
	for {
		header, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			writeESError(w, r, upstreamError(ctx, err))
			return
		}
		header = append([]byte(nil), header...)
		sbody, err := lr.next()
		if err == io.EOF {
			// A header without a body: Elasticsearch reports it.
			cur = append(cur, header...)
			break
		}
		if err != nil {
			writeESError(w, r, upstreamError(ctx, err))
			return
		}
		pos := n
		n++
		if !bytes.Contains(sbody, qvbKey) {
			cur = append(cur, header...)
			cur = append(cur, sbody...)
			continue
		}
		if len(cur) > 0 {
			segs = append(segs, msearchSegment{raw: cur})
			cur = nil
		}
		// Admission before any per-item work: the count is an upper bound
		// (the key could sit inside a string), taken before anything is parsed.
		if builders += bytes.Count(sbody, qvbKey); builders > s.cfg.MaxQueryBuilders {
			writeESError(w, r, tooManyBuilders(s.cfg.MaxQueryBuilders))
			return
		}
		it := &msearchItem{pos: pos, header: header, body: append([]byte(nil), bytes.TrimRight(sbody, " \t\r\n")...)}
		segs = append(segs, msearchSegment{item: it})
		items = append(items, it)
	}
	if len(cur) > 0 {
		segs = append(segs, msearchSegment{raw: cur})
	}
	if e := s.rewriteMsearchItems(ctx, items); e != nil {
		writeESError(w, r, e)
		return
	}

	bufs := make([][]byte, 0, 3*len(segs))
	var failed []*msearchItem
	for _, sg := range segs {
		switch {
		case sg.item == nil:
			bufs = append(bufs, sg.raw)
		case sg.item.err != nil:
			failed = append(failed, sg.item)
		default:
			bufs = append(bufs, sg.item.header, sg.item.out, newline)
		}
	}
	out := outRequest{method: r.Method, path: r.URL.EscapedPath(), rawQuery: r.URL.RawQuery, header: r.Header, bufs: bufs}
	if decoded {
		out.dropHeaders = []string{"Content-Encoding"}
	}
	s.answerMerged(w, r, out, "msearch", len(failed), n, func(esBody []byte) ([]byte, error) {
		return mergeMsearch(esBody, n, failed, time.Since(start))
	})
}

type msearchSegment struct {
	raw  []byte
	item *msearchItem
}

// mergeMsearch puts the sidecar's errors into Elasticsearch's responses
// array at their request positions.
func mergeMsearch(esBody []byte, n int, failed []*msearchItem, took time.Duration) ([]byte, error) {
	return mergeArray(esBody, n, "responses", "", failed,
		func(it *msearchItem) int { return it.pos },
		func(b []byte, it *msearchItem) []byte { return it.err.appendFull(b) }, took)
}
