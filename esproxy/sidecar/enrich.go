package sidecar

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"time"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/esproxy"
)

// acquire takes an embedding slot, waiting while ctx allows. Slots bound the
// embeddings in flight over all requests so a large bulk queues here instead
// of overflowing the decode queue (which answers 429 when full).
//
// It is also where inference admission is settled (admitted): every
// embedding and image fetch comes after an acquire.
func (s *Sidecar) acquire(ctx context.Context) error {
	if err := admitted(ctx); err != nil {
		return err
	}
	select {
	case s.slots <- struct{}{}:
		s.metrics.inflight.Inc()
		return nil
	case <-ctx.Done():
		if ctx.Err() == context.DeadlineExceeded {
			return apierr.Wrap(ctx.Err(), apierr.Timeout, "sidecar_deadline", "the request deadline passed while waiting for an embedding slot")
		}
		return apierr.Wrap(ctx.Err(), apierr.Canceled, "canceled", "the request was canceled")
	}
}

func (s *Sidecar) release() {
	s.metrics.inflight.Dec()
	<-s.slots
}

// mayNeed reports whether doc can hold one of the rules' fields: a substring
// test that lets the vast majority of documents (no image field) through
// without scanning them.
func mayNeed(doc []byte, rules []Rule) bool {
	for _, r := range rules {
		if bytes.Contains(doc, []byte(`"`+r.Field+`"`)) {
			return true
		}
	}
	return false
}

// enrichDoc computes the vectors the rules ask for in one JSON document and
// returns the rewritten document: the same bytes, minus the input fields
// (unless kept) and any stale target fields, plus the target vectors at the
// end. changed is false when no rule field is present at the top level.
func (s *Sidecar) enrichDoc(ctx context.Context, doc []byte, rules []Rule) (out []byte, changed bool, err error) {
	if !mayNeed(doc, rules) {
		return doc, false, nil
	}
	var members []member
	if err := objectMembers(doc, func(m member) error { members = append(members, m); return nil }); err != nil {
		return nil, false, newESError(http.StatusBadRequest, "document_parsing_exception", "failed to parse the document: "+err.Error())
	}
	type job struct {
		rule Rule
		m    member
	}
	var jobs []job
	for _, r := range rules {
		for _, m := range members {
			if m.Key == r.Field && !bytes.Equal(doc[m.ValStart:m.End], []byte("null")) {
				jobs = append(jobs, job{r, m}) // the last duplicate wins below
			}
		}
	}
	if len(jobs) == 0 {
		return doc, false, nil
	}
	targets := map[string]string{} // target -> field that fills it
	vectors := map[string][]float32{}
	var order []string
	for _, j := range jobs {
		if f, dup := targets[j.rule.Target]; dup && f != j.rule.Field {
			return nil, false, newESError(http.StatusBadRequest, inputType(j.rule.Kind),
				fmt.Sprintf("fields [%s] and [%s] both fill [%s]; send one of them", f, j.rule.Field, j.rule.Target))
		}
		if _, seen := targets[j.rule.Target]; !seen {
			order = append(order, j.rule.Target)
		}
		targets[j.rule.Target] = j.rule.Field
		vec, err := s.embedField(ctx, j.rule, doc[j.m.ValStart:j.m.End])
		if err != nil {
			return nil, false, err
		}
		vectors[j.rule.Target] = vec
	}
	drop := map[string]bool{}
	for _, j := range jobs {
		if !j.rule.Keep {
			drop[j.rule.Field] = true
		}
	}
	for t := range targets {
		drop[t] = true
	}
	out = make([]byte, 0, len(doc)+len(vectors)*(s.vecBytes+32))
	out = append(out, '{')
	first := true
	for _, m := range members {
		if drop[m.Key] {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, doc[m.Start:m.End]...)
	}
	for _, t := range order {
		if !first {
			out = append(out, ',')
		}
		first = false
		out = appendQuoted(out, t)
		out = append(out, ':')
		out = esproxy.AppendVector(out, vectors[t])
	}
	out = append(out, '}')
	return out, true, nil
}

// enrichUpdate enriches the partial document ("doc") and the "upsert"
// document of an update body, leaving scripts and options as they are.
func (s *Sidecar) enrichUpdate(ctx context.Context, body []byte, rules []Rule) ([]byte, bool, error) {
	if !mayNeed(body, rules) {
		return body, false, nil
	}
	type part struct {
		m   member
		new []byte
	}
	var parts []part
	err := objectMembers(body, func(m member) error {
		if (m.Key == "doc" || m.Key == "upsert") && body[m.ValStart] == '{' {
			parts = append(parts, part{m: m})
		}
		return nil
	})
	if err != nil {
		return nil, false, newESError(http.StatusBadRequest, typeParsing, "failed to parse the update body: "+err.Error())
	}
	changed := false
	for i := range parts {
		m := parts[i].m
		doc, ch, err := s.enrichDoc(ctx, body[m.ValStart:m.End], rules)
		if err != nil {
			return nil, false, err
		}
		if ch {
			parts[i].new, changed = doc, true
		}
	}
	if !changed {
		return body, false, nil
	}
	out := make([]byte, 0, len(body)+2*s.vecBytes)
	last := 0
	for _, p := range parts {
		if p.new == nil {
			continue
		}
		out = append(out, body[last:p.m.ValStart]...)
		out = append(out, p.new...)
		last = p.m.End
	}
	out = append(out, body[last:]...)
	return out, true, nil
}

// embedField turns one input value (raw JSON) into a unit vector.
func (s *Sidecar) embedField(ctx context.Context, r Rule, raw []byte) ([]float32, error) {
	if raw[0] != '"' {
		return nil, newESError(http.StatusBadRequest, inputType(r.Kind), fmt.Sprintf("field [%s] must be a string", r.Field))
	}
	val, err := unquoteBytes(raw)
	if err != nil {
		return nil, newESError(http.StatusBadRequest, inputType(r.Kind), fmt.Sprintf("field [%s]: %v", r.Field, err))
	}
	return s.embedValue(ctx, r.Kind, r.Field, val)
}

// embedValue embeds a text, a base64 image or an image URL. field names
// the input in error reasons.
func (s *Sidecar) embedValue(ctx context.Context, kind, field string, val []byte) (vec []float32, err error) {
	start := time.Now()
	defer func() { s.metrics.observeEmbed(kind, start, err) }()
	var data []byte
	switch kind {
	case KindText:
		vec, err = s.texts.Embed(ctx, string(val))
		if err != nil {
			return nil, fieldError(field, kind, err)
		}
		return vec, nil
	case KindImageURL:
		data, err = s.fetchImage(ctx, string(val))
		if err != nil {
			return nil, fieldError(field, kind, err)
		}
	default:
		data, err = decodeBase64Image(val)
		if err != nil {
			return nil, newESError(http.StatusBadRequest, typeImage, fmt.Sprintf("field [%s] is not valid base64: %v", field, err))
		}
	}
	vec, _, err = s.images.Embed(ctx, data)
	if err != nil {
		return nil, fieldError(field, kind, err)
	}
	return vec, nil
}

// fieldError names the field in an input error.
func fieldError(field, kind string, err error) *esError {
	e := toESError(err, kind)
	if e.Status == http.StatusBadRequest {
		c := *e
		c.Reason = "field [" + field + "]: " + e.Reason
		return &c
	}
	return e
}

func (s *Sidecar) fetchImage(ctx context.Context, rawURL string) ([]byte, error) {
	if s.fetch == nil {
		return nil, newESError(http.StatusBadRequest, typeImage, "image URLs are not fetched: url_fetch is disabled in the sidecar configuration")
	}
	return s.fetch.fetch(ctx, rawURL)
}

// decodeBase64Image accepts standard base64 with or without padding (and
// line breaks, which the decoder skips), URL-safe base64, and data: URIs.
func decodeBase64Image(s []byte) ([]byte, error) {
	if bytes.HasPrefix(s, []byte("data:")) {
		i := bytes.IndexByte(s, ',')
		if i < 0 || !bytes.HasSuffix(s[:i], []byte(";base64")) {
			return nil, fmt.Errorf("a data: URI must be base64 (data:<type>;base64,<data>)")
		}
		s = s[i+1:]
	}
	if len(s) == 0 {
		return nil, fmt.Errorf("empty value")
	}
	enc := base64.StdEncoding
	if bytes.ContainsAny(s, "-_") {
		enc = base64.URLEncoding
	}
	dst := make([]byte, enc.DecodedLen(len(s)))
	n, err := enc.Decode(dst, s)
	if err != nil {
		// Unpadded base64 (common from JavaScript and URL-safe encoders).
		n2, err2 := enc.WithPadding(base64.NoPadding).Decode(dst, s)
		if err2 != nil {
			return nil, err
		}
		n = n2
	}
	return dst[:n], nil
}
