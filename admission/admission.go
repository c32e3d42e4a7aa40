// Package admission bounds the memory that requests hold at once. One Budget
// of bytes is shared by the REST API and the Elasticsearch-compatible
// listener: request bodies are charged before they are read (their declared
// Content-Length, or in chunks as a chunked body arrives) and decoded images
// while they are decoded. A request that would go over the budget is refused
// at once with 429 and Retry-After: a burst of large uploads costs retries,
// never an OOM kill that takes every in-flight request with it.
package admission

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/internal/promreg"
)

// CodeOverBudget is the error code of a refusal.
const CodeOverBudget = "memory_budget_exceeded"

// Budget is a fixed number of bytes that requests reserve and release. It
// never waits: waiting requests would hold connections and their headers
// while the budget is full, and a client's retry after Retry-After is as good
// as a queue. It is safe for concurrent use, and it satisfies the sidecar's
// Budget interface (TryAcquire, Release).
type Budget struct {
	limit      int64
	used       atomic.Int64
	retryAfter time.Duration
	refusals   *prometheus.CounterVec
}

// New returns a budget of limit bytes; refusals carry retryAfter. reg, if not
// nil, gets the budget's metrics.
func New(limit int64, retryAfter time.Duration, reg prometheus.Registerer) *Budget {
	b := &Budget{
		limit:      limit,
		retryAfter: retryAfter,
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusou_memory_budget_refusals_total",
			Help: "Requests refused with 429 because the bytes they needed did not fit in server.memory_budget_bytes, by what needed them.",
		}, []string{"what"}),
	}
	b.refusals = promreg.Register(reg, b.refusals)
	promreg.All(reg,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tusou_memory_budget_bytes",
			Help: "server.memory_budget_bytes: the bytes requests may hold at once (bodies, decoded images).",
		}, func() float64 { return float64(b.limit) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tusou_memory_budget_in_use_bytes",
			Help: "Bytes of server.memory_budget_bytes reserved by requests now.",
		}, func() float64 { return float64(b.used.Load()) }))
	return b
}

// Limit is the budget's size in bytes.
func (b *Budget) Limit() int64 { return b.limit }

// InUse is the number of bytes reserved now.
func (b *Budget) InUse() int64 { return b.used.Load() }

// TryAcquire reserves n bytes, or reports false (reserving nothing) when
// that would go over the budget.
func (b *Budget) TryAcquire(n int64) bool {
	if n <= 0 {
		return true
	}
	for {
		u := b.used.Load()
		if u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// Release returns n bytes reserved earlier.
func (b *Budget) Release(n int64) {
	if n > 0 {
		b.used.Add(-n)
	}
}

// Refused counts a refusal and returns the 429 error for it. what says what
// needed the bytes ("request_body", "image_decode"), for the metric.
func (b *Budget) Refused(what string, n int64) *apierr.Error {
	b.refusals.WithLabelValues(what).Inc()
	return apierr.New(apierr.Overloaded, CodeOverBudget,
		"the gateway holds as many request bytes as server.memory_budget_bytes (%d) allows; %d more do not fit now, retry shortly",
		b.limit, n).WithRetryAfter(b.retryAfter)
}

// Reserve starts a lease of n bytes (n may be 0: a body of unknown length),
// or returns the 429 error when they do not fit.
func (b *Budget) Reserve(what string, n int64) (*Lease, error) {
	if !b.TryAcquire(n) {
		return nil, b.Refused(what, n)
	}
	return &Lease{b: b, what: what, held: max(n, 0)}, nil
}

// Lease is what one request holds of a Budget. It is used by the request's
// goroutine; Release may be deferred.
type Lease struct {
	b    *Budget
	what string
	held int64
}

// Held is the number of bytes the lease holds.
func (l *Lease) Held() int64 { return l.held }

// Cover grows the lease to at least n bytes in total, or returns the 429
// error (the lease keeps what it held).
func (l *Lease) Cover(n int64) error {
	more := n - l.held
	if more <= 0 {
		return nil
	}
	if !l.b.TryAcquire(more) {
		return l.b.Refused(l.what, more)
	}
	l.held = n
	return nil
}

// Release returns everything the lease holds. Call it once the request's
// buffers are no longer used; calling it again does nothing.
func (l *Lease) Release() {
	l.b.Release(l.held)
	l.held = 0
}
