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
	up       *upstream
	images   ImageEmbedder
	texts    TextEmbedder
	fetch    *fetcher
	slots    chan struct{}
	log      *zap.Logger
	metrics  *metrics
	vecBytes int // a guess at a vector's JSON size, to size buffers
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
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Sidecar{
		cfg:      cfg,
		rules:    ruleSet(cfg.Rules),
		allow:    newAllowSet(cfg.Allow),
		labels:   newLabelSet(cfg.Allow),
		up:       up,
		images:   images,
		texts:    texts,
		slots:    make(chan struct{}, cfg.EmbedConcurrency),
		log:      log,
		metrics:  m,
		vecBytes: 512 * 12,
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

// ServeHTTP classifies the request, refuses what the allow-list does not
// name, and hands the rest to its handler.
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
	if !s.allow.allowed(rt.Op) {
		s.metrics.refused.WithLabelValues(s.labels.label(rt.Op)).Inc()
		s.log.Info("sidecar: refused", zap.String("op", rt.Op), zap.String("method", r.Method), zap.String("path", r.URL.Path))
		writeESError(rec, r, newESError(http.StatusForbidden, typeSecurity, fmt.Sprintf(
			"action [%s] (%s %s) is not allowed through the tusou Elasticsearch sidecar; enable it with sidecar.allow",
			rt.Op, r.Method, r.URL.Path)))
		return
	}
	ctx, cancel := requestDeadline(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	r = r.WithContext(ctx)
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
	default:
		s.passThrough(rec, r)
	}
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
