// Package sidecar is tusou's Elasticsearch-compatible API: point any
// Elasticsearch client at it instead of Elasticsearch. Requests are checked
// against an allow-list and passed through to Elasticsearch (streamed,
// headers and compression kept); on the way, documents that carry an image
// (base64 or URL) or a configured text field get their CLIP vector, and kNN
// searches may send a query_vector_builder (text or image) instead of a
// query_vector. Elasticsearch stays the source of truth for everything else:
// the sidecar never re-encodes a document or an answer it does not change.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tusou/tusou/admission"
	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/preprocess"
	"go.uber.org/zap"
)

// ImageEmbedder turns image bytes into a unit vector (embed.Images).
type ImageEmbedder interface {
	Embed(ctx context.Context, data []byte) ([]float32, preprocess.Info, error)
}

// TextEmbedder turns a text into a unit vector (embed.Texts).
type TextEmbedder interface {
	Embed(ctx context.Context, text string) ([]float32, error)
}

// Sidecar is the Elasticsearch-compatible HTTP handler. It is safe for
// concurrent use; it starts no goroutines that outlive a request.
type Sidecar struct {
	cfg      Config
	rules    ruleSet
	allow    allowSet
	labels   labelSet
	guard    writeGuard
	budgets  []Budget
	auth     authCache
	up       *upstream
	images   ImageEmbedder
	texts    TextEmbedder
	fetch    *fetcher
	slots    chan struct{}
	log      *zap.Logger
	metrics  *metrics
	vecBytes int // a guess at a vector's JSON size, to size buffers
	// oversample is elasticsearch.rescore_oversample, added as rescore_vector
	// to the kNN searches whose vector the sidecar computes (0: never).
	oversample float64
}

// New builds the sidecar. es supplies the upstream addresses, credentials
// and CA (the elasticsearch section); its index settings are not used, the
// sidecar serves whatever indices its clients name. reg may be nil.
func New(cfg Config, es esproxy.Config, images ImageEmbedder, texts TextEmbedder, log *zap.Logger, reg prometheus.Registerer) (*Sidecar, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if images == nil || texts == nil {
		return nil, errors.New("sidecar: image and text embedders are required")
	}
	if log == nil {
		log = zap.NewNop()
	}
	up, err := newUpstream(es, cfg.Credentials)
	if err != nil {
		return nil, err
	}
	m := newMetrics(reg)
	s := &Sidecar{
		cfg:        cfg,
		rules:      ruleSet(cfg.Rules),
		allow:      newAllowSet(cfg.Allow),
		labels:     newLabelSet(cfg.Allow),
		guard:      newWriteGuard(cfg, es.Index),
		budgets:    []Budget{admission.New(cfg.MaxInflightBytes, 0, nil)},
		up:         up,
		images:     images,
		texts:      texts,
		slots:      make(chan struct{}, cfg.EmbedConcurrency),
		log:        log,
		metrics:    m,
		vecBytes:   512 * 12,
		oversample: es.RescoreOversample,
	}
	if cfg.URLFetch.Enabled {
		s.fetch = newFetcher(cfg.URLFetch, nil)
	} else {
		for _, r := range cfg.Rules {
			if r.Kind == KindImageURL {
				log.Info("sidecar: image_url rules fail their documents because url_fetch is disabled",
					zap.String("index", r.Index), zap.String("field", r.Field))
			}
		}
	}
	return s, nil
}

// Close releases idle upstream and fetch connections. In-flight requests
// are drained by the http.Server's Shutdown, not here.
func (s *Sidecar) Close() {
	s.up.close()
	if s.fetch != nil {
		s.fetch.close()
	}
}

// ServeHTTP classifies the request against the route table, refuses what
// the table, the allow-list or the write rules do not let through, admits
// the client (API key in replace mode) and its body (bytes in flight), and
// hands the rest to its handler. Inference admission in forward mode comes
// later, at the first embedding (see auth.go).
func (s *Sidecar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rt := classify(r.Method, r.URL.EscapedPath())
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("sidecar: panic", zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
			if !rec.wrote {
				writeESError(rec, r, newESError(http.StatusInternalServerError, typeInternal, "internal error"))
			}
		}
		op := s.labels.label(rt.Op)
		s.metrics.requests.WithLabelValues(op, strconv.Itoa(rec.status)).Inc()
		s.metrics.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	}()
	if e := s.admit(r, rt); e != nil {
		if e.Status == http.StatusForbidden {
			s.metrics.refused.WithLabelValues(s.labels.label(rt.Op)).Inc()
			s.log.Info("sidecar: refused", zap.String("op", rt.Op), zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.String("reason", e.Reason))
		}
		writeESError(rec, r, e)
		return
	}
	ctx, cancel := requestDeadline(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	r = r.WithContext(ctx)
	if rt.How != passThrough && rt.How != rootInfo {
		var rv *reservation
		var e *esError
		r, rv, e = s.withReservation(r, s.cfg.MaxBodyBytes)
		defer rv.release()
		if e != nil {
			writeESError(rec, r, e)
			return
		}
	}
	r = s.withGate(r)
	switch rt.How {
	case rootInfo:
		s.serveInfo(rec, r)
	case bulkWrite:
		s.serveBulk(rec, r, rt)
	case docWrite, docUpdate:
		s.serveDoc(rec, r, rt)
	case searchOne:
		s.serveSearch(rec, r)
	case searchMulti:
		s.serveMsearch(rec, r, rt)
	case indexBody, aliasActions, reindexBody:
		s.serveChecked(rec, r, rt)
	default:
		s.passThrough(rec, r)
	}
}

// admit applies every check that needs no body: the listener's API key
// (replace mode: nothing is answered to a client without it), refused
// headers and parameters, the route table, the allow-list and the write
// rules.
func (s *Sidecar) admit(r *http.Request, rt route) *esError {
	if s.cfg.Credentials == CredentialsReplace {
		if e := s.checkAPIKey(r); e != nil {
			return e
		}
	}
	notAllowed := func(why string) *esError {
		return newESError(http.StatusForbidden, typeSecurity, fmt.Sprintf(
			"action [%s] (%s %s) is not allowed through the tusou Elasticsearch sidecar: %s", rt.Op, r.Method, r.URL.Path, why))
	}
	if why := requestRefusal(r, s.cfg.AllowCompatibleWith7); why != "" {
		return notAllowed(why)
	}
	if rt.Refusal != "" {
		return notAllowed(rt.Refusal)
	}
	if !s.allow.allowed(rt.Op) {
		return notAllowed("enable it with sidecar.allow")
	}
	return s.checkTargets(r, rt)
}

// checkTargets applies the write rules to the indices (and alias) a
// request's path names. Bulk items are checked one by one (serveBulk).
func (s *Sidecar) checkTargets(r *http.Request, rt route) *esError {
	if !rt.Write {
		return nil
	}
	check := s.guard.check
	if rt.How == docWrite || rt.How == docUpdate || rt.Op == "delete" || rt.Op == "indices.create" {
		check = s.guard.checkOne
	}
	if e := check(rt.Op, rt.Index); e != nil {
		return e
	}
	if rt.Target == "" {
		return nil
	}
	if rt.Op == "indices.update_aliases" && r.Method != http.MethodDelete {
		return s.checkAlias(rt.Op, rt.Target)
	}
	return s.guard.check(rt.Op, rt.Target)
}

// serveChecked forwards a body the sidecar must judge first: create-index
// (clone, shrink, split, rollover) bodies, alias actions and the
// destination of a reindex.
func (s *Sidecar) serveChecked(w http.ResponseWriter, r *http.Request, rt route) {
	body, decoded, err := readAllBody(w, r, s.cfg.MaxBodyBytes)
	if err != nil {
		writeESError(w, r, upstreamError(r.Context(), err))
		return
	}
	var e *esError
	switch rt.How {
	case aliasActions:
		e = s.checkAliasActions(body)
	case reindexBody:
		e = s.checkReindex(body)
	default:
		e = s.checkIndexBody(rt.Op, body)
	}
	if e != nil {
		s.metrics.refused.WithLabelValues(s.labels.label(rt.Op)).Inc()
		writeESError(w, r, e)
		return
	}
	out := outRequest{method: r.Method, path: r.URL.EscapedPath(), rawQuery: r.URL.RawQuery, header: r.Header, bufs: [][]byte{body}}
	if decoded {
		out.dropHeaders = []string{"Content-Encoding"}
	}
	s.forward(w, r, out)
}

// statusRecorder remembers the status for metrics and whether anything was written.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(p)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// passThrough streams the request to Elasticsearch and the answer back,
// unchanged. The body keeps its Content-Encoding (Elasticsearch decodes it).
func (s *Sidecar) passThrough(w http.ResponseWriter, r *http.Request) {
	out := outRequest{method: r.Method, path: r.URL.EscapedPath(), rawQuery: r.URL.RawQuery, header: r.Header}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		out.body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		out.contentLength = r.ContentLength
	}
	s.forward(w, r, out)
}

// forward sends out and streams the answer to the client.
func (s *Sidecar) forward(w http.ResponseWriter, r *http.Request, out outRequest) {
	resp, err := s.up.do(r.Context(), out)
	if err != nil {
		s.upstreamFailed(w, r, err)
		return
	}
	defer resp.Body.Close()
	if err := copyResponse(w, resp); err != nil {
		s.log.Debug("sidecar: copying the answer failed", zap.Error(err))
	}
}

func (s *Sidecar) upstreamFailed(w http.ResponseWriter, r *http.Request, err error) {
	e := upstreamError(r.Context(), err)
	if e.Type == typeUpstream || e.Type == typeTimeout {
		s.metrics.upstreamKO.Inc()
		s.log.Warn("sidecar: Elasticsearch call failed", zap.String("path", r.URL.Path), zap.Error(err))
	}
	writeESError(w, r, e)
}

// serveDoc enriches one document (index, create) or the partial document of
// an update, then forwards it. An input problem fails the request with
// Elasticsearch's error shape and nothing is stored.
func (s *Sidecar) serveDoc(w http.ResponseWriter, r *http.Request, rt route) {
	body, decoded, err := readAllBody(w, r, s.cfg.MaxBodyBytes)
	if err != nil {
		writeESError(w, r, upstreamError(r.Context(), err))
		return
	}
	rules := s.rules.match(rt.Index)
	newBody, changed := body, false
	if len(rules) > 0 && mayNeed(body, rules) {
		if err := s.acquire(r.Context()); err != nil {
			writeESError(w, r, toESError(err, KindImage))
			return
		}
		if rt.How == docUpdate {
			newBody, changed, err = s.enrichUpdate(r.Context(), body, rules)
		} else {
			newBody, changed, err = s.enrichDoc(r.Context(), body, rules)
		}
		s.release()
		if err != nil {
			writeESError(w, r, toESError(err, KindImage))
			return
		}
	}
	out := outRequest{method: r.Method, path: r.URL.EscapedPath(), rawQuery: r.URL.RawQuery, header: r.Header, bufs: [][]byte{newBody}}
	if decoded || changed {
		out.dropHeaders = []string{"Content-Encoding"}
	}
	s.forward(w, r, out)
}
