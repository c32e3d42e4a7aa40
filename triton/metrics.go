package triton

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
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
	}
	if reg != nil {
		m.batchSize = register(reg, m.batchSize)
		m.queueWait = register(reg, m.queueWait)
		m.inferTime = register(reg, m.inferTime)
		m.queueDepth = register(reg, m.queueDepth)
		m.inflight = register(reg, m.inflight)
		m.refusals = register(reg, m.refusals)
		m.errorsTotal = register(reg, m.errorsTotal)
		m.retries = register(reg, m.retries)
	}
	return m
}

// register registers c, or returns the identical collector already
// registered. Any other registration error is a programming error.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
