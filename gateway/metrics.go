package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tusou/tusou/internal/promreg"
)

// httpMetrics are the gateway's request metrics. Names and help are defined
// here once; the registry is passed in.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge
	refusals *prometheus.CounterVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusou_http_requests_total",
			Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tusou_http_request_duration_seconds",
			Help: "HTTP request latency by route, method and status code.",
			// 1 ms .. ~33 s: searches take milliseconds, large ingests seconds.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"route", "method", "code"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tusou_http_inflight_requests",
			Help: "HTTP requests being handled now.",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusou_refusals_total",
			Help: "Requests refused with a 4xx error, by error code (e.g. image_too_many_pixels, invalid_k).",
		}, []string{"reason"}),
	}
	m.requests = promreg.Register(reg, m.requests)
	m.duration = promreg.Register(reg, m.duration)
	m.inflight = promreg.Register(reg, m.inflight)
	m.refusals = promreg.Register(reg, m.refusals)
	return m
}
