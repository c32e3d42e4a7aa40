package triton

import (
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/peer"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/internal/promreg"
)

// Refusal reasons (label "reason" of tusou_triton_refusals_total).
const (
	refusedQueueFull = "queue_full" // batch queue full: Overloaded at once
	refusedClosed    = "closed"     // batcher closed: shutting down
	refusedExpired   = "expired"    // caller's context ended while queued: skipped, never sent
	refusedAbandoned = "abandoned"  // Close gave up waiting: Unavailable
)

// Metrics are the Prometheus collectors of this package. One set serves both
// models (label "model"); NewMetrics registers them once per registerer.
type Metrics struct {
	batchSize   *prometheus.HistogramVec
	queueWait   *prometheus.HistogramVec
	inferTime   *prometheus.HistogramVec
	queueDepth  *prometheus.GaugeVec
	inflight    *prometheus.GaugeVec
	refusals    *prometheus.CounterVec
	errorsTotal *prometheus.CounterVec
	retries     *prometheus.CounterVec
	replicas    *prometheus.CounterVec
	replicaUp   *prometheus.GaugeVec
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered, for tests and tools). Registering twice with the same registerer
// reuses the collectors already there, so two clients in one process share
// them.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tusou_triton_batch_size",
			Help: "Items per inference batch sent to Triton, by model.",
			// Powers of two up to the largest batch Triton configs use.
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}, []string{"model"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tusou_triton_queue_wait_seconds",
			Help: "Time an item waited in the micro-batcher before its batch was sent, by model.",
			// 100us .. ~1.6s: max_delay is a few ms; longer waits mean all
			// in-flight slots were busy.
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 15),
		}, []string{"model"}),
		inferTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tusou_triton_infer_duration_seconds",
			Help: "Duration of one ModelInfer RPC attempt (network + Triton queue + compute), by model and outcome.",
			// 1ms .. ~16s: GPU batches take milliseconds, the CPU stack seconds.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"model", "outcome"}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tusou_triton_queue_depth",
			Help: "Items waiting in the micro-batcher queue, by model.",
		}, []string{"model"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tusou_triton_inflight_batches",
			Help: "Batches sent to Triton and not yet answered, by model.",
		}, []string{"model"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusou_triton_refusals_total",
			Help: "Items the micro-batcher did not send, by model and reason (queue_full, closed, expired, abandoned).",
		}, []string{"model", "reason"}),
		errorsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusou_triton_errors_total",
			Help: "Failed inference batches (after retries), by model and error kind.",
		}, []string{"model", "kind"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusou_triton_retries_total",
			Help: "ModelInfer calls resent after a connection error, by model.",
		}, []string{"model"}),
		replicas: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusou_triton_replica_requests_total",
			Help: "ModelInfer attempts by model, Triton replica (address) and outcome (ok or the error kind): how batches spread over replicas.",
		}, []string{"model", "replica", "outcome"}),
		replicaUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tusou_triton_replica_up",
			Help: "1 while the Triton replica (address) is ready in the gateway's load balancer and gets batches, else 0; one series per address the target resolves to.",
		}, []string{"replica"}),
	}
	m.batchSize = promreg.Register(reg, m.batchSize)
	m.queueWait = promreg.Register(reg, m.queueWait)
	m.inferTime = promreg.Register(reg, m.inferTime)
	m.queueDepth = promreg.Register(reg, m.queueDepth)
	m.inflight = promreg.Register(reg, m.inflight)
	m.refusals = promreg.Register(reg, m.refusals)
	m.errorsTotal = promreg.Register(reg, m.errorsTotal)
	m.retries = promreg.Register(reg, m.retries)
	m.replicas = promreg.Register(reg, m.replicas)
	m.replicaUp = promreg.Register(reg, m.replicaUp)
	return m
}

// initModel creates the per-model series that normally appear only on
// trouble (refusals, failed batches, retries) at zero, so /metrics lists them
// from the start: dashboards show 0 instead of "no data", and alert rules'
// rate()/increase() see the first failure instead of losing it to a series
// that did not exist before.
func (m *Metrics) initModel(model string) {
	for _, reason := range []string{refusedQueueFull, refusedClosed, refusedExpired, refusedAbandoned} {
		m.refusals.WithLabelValues(model, reason)
	}
	// The kinds a batch fails with (errors.go maps gRPC codes to these).
	for _, k := range []apierr.Kind{apierr.Unavailable, apierr.Overloaded, apierr.Timeout, apierr.BadGateway, apierr.Internal} {
		m.errorsTotal.WithLabelValues(model, k.String())
	}
	m.retries.WithLabelValues(model)
}

// replicaBatch counts one ModelInfer attempt on the replica that served it.
// An attempt that never reached a replica (no connection) is "none".
func (m *Metrics) replicaBatch(model string, p *peer.Peer, outcome string) {
	addr := "none"
	if p.Addr != nil {
		addr = p.Addr.String()
	}
	m.replicas.WithLabelValues(model, addr, outcome).Inc()
}
