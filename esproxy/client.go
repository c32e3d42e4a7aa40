// Package esproxy is the gateway's Elasticsearch layer: it owns the index
// (mapping, provenance, alias), writes documents with their CLIP vectors and
// runs kNN searches. Every failure comes back as an *apierr.Error.
//
// It uses go-elasticsearch's esapi with hand-written request bodies and small
// response structs rather than the typed API: the hot paths (bulk, kNN) are
// one pass of appends into a pre-sized buffer with exact, compact float32
// formatting (the typed API marshals vectors through reflection), and
// responses are trimmed with filter_path and decoded into the few fields we
// read instead of the typed API's full response structs.
package esproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esapi"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/internal/promreg"
	"github.com/tusou/tusou/internal/tlsutil"
)

// Client is the Elasticsearch layer of the native API. It is safe for
// concurrent use. Call EnsureIndex once at start-up before writing.
type Client struct {
	cfg     Config
	es      *elasticsearch.Client
	log     *zap.Logger
	metrics *metrics
	// prov is the provenance EnsureIndex accepted; writes stamp it on every
	// document and refuse to run without it.
	prov atomic.Pointer[Provenance]
	// excludes is the _source filter that keeps vectors out of every answer.
	excludes []string
	// writeIndex is the concrete index behind the alias that EnsureIndex
	// found writes go to; the refresher refreshes it.
	writeIndex atomic.Pointer[string]
	// refresher makes writes searchable by coalesced refreshes (refresh.go).
	refresher *refresher
	// quantized says whether the vectors behind the alias are quantised, so
	// kNN needs rescore_vector for exact scores: the configured type until
	// EnsureIndex has seen the real mappings (the index wins).
	quantized atomic.Bool
	// pinned is the concrete index a generation's client (ForIndex) reads
	// and writes directly; empty: the alias.
	pinned string
	// reg is where the client's metrics live (ForIndex registers there too).
	reg prometheus.Registerer
	// shared marks a ForIndex client: the connection pool is its parent's.
	shared bool
}

// New builds a client from a validated config. It does not contact
// Elasticsearch (the gateway may start before it); use Ready/EnsureIndex.
// reg may be nil to skip metrics.
func New(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	esCfg := elasticsearch.Config{
		Addresses:  cfg.Addresses,
		Username:   cfg.Username,
		Password:   cfg.Password,
		APIKey:     cfg.APIKey,
		MaxRetries: cfg.MaxRetries,
		// Retry only when the request context is still alive: retrying a
		// canceled request just burns the backoff.
		RetryOnError: func(req *http.Request, err error) bool { return req.Context().Err() == nil },
		RetryBackoff: func(attempt int) time.Duration {
			return time.Duration(math.Min(float64(50*time.Millisecond)*math.Pow(2, float64(attempt-1)), float64(2*time.Second)))
		},
		DisableRetry: cfg.MaxRetries == 0,
	}
	// Pool connections per node: bulk and kNN run many requests in parallel
	// and net/http's default of 2 idle connections per host churns.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CACert != "" {
		pool, err := tlsutil.LoadCA(cfg.CACert)
		if err != nil {
			return nil, fmt.Errorf("ca_cert: %w", err)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	esCfg.Transport = tr
	es, err := elasticsearch.NewClient(esCfg)
	if err != nil {
		return nil, fmt.Errorf("esproxy: %w", err)
	}
	m := newMetrics(reg)
	c := &Client{cfg: cfg, es: es, log: log, metrics: m, excludes: []string{cfg.VectorField}, reg: reg}
	c.quantized.Store(Quantized(cfg.IndexOptions.Type))
	c.refresher = newRefresher(c.refreshWriteIndex, cfg.RefreshMinInterval, cfg.RequestTimeout, reg)
	return c, nil
}

// Close stops the refresher (writers still waiting for a refresh get an
// error; one in flight may finish until ctx ends) and releases idle
// connections. In-flight calls may still finish.
func (c *Client) Close(ctx context.Context) error {
	c.refresher.close(ctx)
	if c.shared {
		return nil
	}
	err := c.es.Close(ctx)
	if errors.Is(err, elasticsearch.ErrAlreadyClosed) {
		return nil
	}
	return err
}

// Alias returns the configured alias.
func (c *Client) Alias() string { return c.cfg.Index }

// Target is the index name the client reads and writes: the concrete index
// of a ForIndex client, else the alias.
func (c *Client) Target() string {
	if c.pinned != "" {
		return c.pinned
	}
	return c.cfg.Index
}

// requireAlias is the require_alias flag of writes: through the alias it
// stops Elasticsearch from auto-creating an unmapped index named like it; a
// ForIndex client writes to a concrete index that must exist (no
// auto-creation either: action.auto_create_index aside, its mapping is
// strict and created by EnsureGeneration).
func (c *Client) requireAlias() *bool {
	if c.pinned != "" {
		return nil
	}
	return ptr(true)
}

// ForIndex returns a client for one concrete index (a model generation's):
// it reads and writes index directly, stamps p on every document and
// refreshes only index, sharing c's connection pool and metrics. quantized
// says whether index stores quantised vectors (kNN then rescores). Close it
// before c; closing it leaves c's connections open.
func (c *Client) ForIndex(index string, p Provenance, quantized bool) *Client {
	cfg := c.cfg
	cfg.Dims = p.Dims
	g := &Client{cfg: cfg, es: c.es, log: c.log.With(zap.String("index", index)), metrics: c.metrics,
		excludes: c.excludes, pinned: index, reg: c.reg, shared: true}
	g.prov.Store(&p)
	g.writeIndex.Store(&index)
	g.quantized.Store(quantized)
	g.refresher = newRefresher(g.refreshWriteIndex, cfg.RefreshMinInterval, cfg.RequestTimeout, c.reg)
	return g
}

// opContext applies the request timeout unless the caller's deadline is sooner.
func (c *Client) opContext(ctx context.Context, limit time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= limit {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, limit)
}

// perform sends req and returns a 2xx response (body open: the caller
// closes it) or a classified error. ok lists extra statuses the caller wants
// to see itself (404 on Get, 409 on create).
func (c *Client) perform(ctx context.Context, op string, req esapi.Request, ok ...int) (*esapi.Response, error) {
	res, err := req.Do(ctx, c.es)
	if err != nil {
		return nil, transportError(ctx, op, err)
	}
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		return res, nil
	}
	for _, s := range ok {
		if res.StatusCode == s {
			return res, nil
		}
	}
	defer res.Body.Close()
	return nil, statusError(op, res.StatusCode, res.Header, readBody(res.Body, 64<<10))
}

// checkProvenance returns the provenance EnsureIndex accepted.
func (c *Client) checkProvenance() (*Provenance, error) {
	p := c.prov.Load()
	if p == nil {
		return nil, apierr.New(apierr.Internal, CodeNotInitialised, "esproxy: EnsureIndex must succeed before writes")
	}
	return p, nil
}

// metrics are the esproxy Prometheus series.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	items    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusou_es_requests_total",
			Help: "Elasticsearch calls by operation and outcome (ok or the apierr kind).",
		}, []string{"op", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tusou_es_request_duration_seconds",
			Help: "Elasticsearch call latency by operation, retries included.",
			// 1ms .. ~16s: kNN is milliseconds, a wait_for bulk up to a refresh interval and more.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"op"}),
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusou_es_bulk_items_total",
			Help: "Bulk items by result: created, exists or error.",
		}, []string{"result"}),
	}
	m.requests = promreg.Register(reg, m.requests)
	m.duration = promreg.Register(reg, m.duration)
	m.items = promreg.Register(reg, m.items)
	return m
}

// observe records one call; use as `defer c.observe(op, time.Now(), &err)`.
func (c *Client) observe(op string, start time.Time, errp *error) {
	outcome := "ok"
	if *errp != nil {
		outcome = apierr.KindOf(*errp).String()
	}
	c.metrics.requests.WithLabelValues(op, outcome).Inc()
	c.metrics.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}
