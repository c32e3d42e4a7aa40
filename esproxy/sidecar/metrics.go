package sidecar

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tusou/tusou/internal/promreg"
)

// metrics are the tusou_sidecar_* series.
type metrics struct {
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	refused    *prometheus.CounterVec
	embeds     *prometheus.CounterVec
	embedTime  *prometheus.HistogramVec
	bulkItems  *prometheus.CounterVec
	inflight   prometheus.Gauge
	bodyBytes  prometheus.Histogram
	upstreamKO prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusou_sidecar_requests_total",
			Help: "Sidecar requests by operation (allow-list name) and HTTP status.",
		}, []string{"op", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tusou_sidecar_request_duration_seconds",
			Help: "Sidecar request latency by operation, embedding and the Elasticsearch call included.",
			// 1ms .. ~65s: a get is milliseconds, a bulk of images seconds.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 17),
		}, []string{"op"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusou_sidecar_refused_total",
			Help: "Requests refused by the allow-list, by operation.",
		}, []string{"op"}),
		embeds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusou_sidecar_embeddings_total",
			Help: "Vectors computed for documents and queries, by input kind (image, image_url, text) and outcome (ok, or the error status).",
		}, []string{"kind", "outcome"}),
		embedTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tusou_sidecar_embedding_duration_seconds",
			Help: "Time to compute one vector (fetch, decode, queue and model), by input kind.",
			// 1ms .. ~16s.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"kind"}),
		bulkItems: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusou_sidecar_bulk_items_total",
			Help: "Bulk items by what the sidecar did: passed (untouched), enriched, or failed (answered by the sidecar, not sent).",
		}, []string{"result"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tusou_sidecar_embeddings_in_flight",
			Help: "Embedding slots in use (at most sidecar.embed_concurrency).",
		}),
		bodyBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tusou_sidecar_bulk_body_bytes",
			Help: "Decoded size of bulk bodies.",
			// 1 KiB .. 256 MiB.
			Buckets: prometheus.ExponentialBuckets(1024, 4, 10),
		}),
		upstreamKO: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tusou_sidecar_upstream_errors_total",
			Help: "Elasticsearch calls that got no HTTP answer (connection refused, timeout).",
		}),
	}
	m.requests = promreg.Register(reg, m.requests)
	m.duration = promreg.Register(reg, m.duration)
	m.refused = promreg.Register(reg, m.refused)
	m.embeds = promreg.Register(reg, m.embeds)
	m.embedTime = promreg.Register(reg, m.embedTime)
	m.bulkItems = promreg.Register(reg, m.bulkItems)
	m.inflight = promreg.Register(reg, m.inflight)
	m.bodyBytes = promreg.Register(reg, m.bodyBytes)
	m.upstreamKO = promreg.Register(reg, m.upstreamKO)
	return m
}

func (m *metrics) observeEmbed(kind string, start time.Time, err error) {
	outcome := "ok"
	if err != nil {
		outcome = strconv.Itoa(toESError(err, kind).Status)
	}
	m.embeds.WithLabelValues(kind, outcome).Inc()
	m.embedTime.WithLabelValues(kind).Observe(time.Since(start).Seconds())
}
