package embed

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/tusou/tusou/apierr"
)

// Limiter bounds CPU-heavy work (image decoding) to a fixed number of workers
// with a bounded number of waiters. Beyond that, callers are refused at once
// with Overloaded, so a burst costs a 429 instead of unbounded memory: each
// waiter holds its upload in memory.
type Limiter struct {
	slots      chan struct{}
	waiting    atomic.Int64
	maxWaiting int64
	retryAfter time.Duration
	onRefuse   func()
}

// NewLimiter allows workers concurrent calls and maxWaiting queued ones.
// onRefuse, if not nil, is called for each refusal (for metrics).
func NewLimiter(workers, maxWaiting int, onRefuse func()) *Limiter {
	return &Limiter{
		slots:      make(chan struct{}, workers),
		maxWaiting: int64(maxWaiting),
		retryAfter: time.Second,
		onRefuse:   onRefuse,
	}
}

// Do runs fn in a worker slot, waiting for one while ctx allows.
func (l *Limiter) Do(ctx context.Context, fn func() error) error {
	select {
	case l.slots <- struct{}{}:
	default:
		if l.waiting.Add(1) > l.maxWaiting {
			l.waiting.Add(-1)
			if l.onRefuse != nil {
				l.onRefuse()
			}
			return apierr.New(apierr.Overloaded, "preprocess_queue_full",
				"too many images are being decoded; retry shortly").WithRetryAfter(l.retryAfter)
		}
		select {
		case l.slots <- struct{}{}:
			l.waiting.Add(-1)
		case <-ctx.Done():
			l.waiting.Add(-1)
			return ctxError(ctx.Err())
		}
	}
	defer func() { <-l.slots }()
	return fn()
}

// Waiting reports how many callers wait for a slot (for the queue-depth gauge).
func (l *Limiter) Waiting() int64 { return l.waiting.Load() }

func ctxError(err error) error {
	if err == context.DeadlineExceeded {
		return apierr.Wrap(err, apierr.Timeout, "deadline_exceeded", "the request deadline passed while waiting to decode the image")
	}
	return apierr.Wrap(err, apierr.Canceled, "canceled", "the request was canceled")
}
