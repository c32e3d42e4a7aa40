package triton

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tusou/tusou/apierr"
)

// FlushFunc runs one batch. It returns exactly one result per item, in item
// order, or an error that applies to every item of the batch. ctx carries the
// earliest deadline among the batch's callers and ends when the batcher is
// abandoned by Close.
type FlushFunc[In, Out any] func(ctx context.Context, items []In) ([]Out, error)

// Batcher is a dynamic micro-batcher: concurrent Submit calls are grouped
// into batches of up to MaxBatchSize items, sent when full or MaxDelay after
// the first item arrived, with at most MaxInflight batches running at once.
//
// Admission is bounded: when QueueSize items are waiting, Submit refuses at
// once with apierr.Overloaded (Retry-After) instead of queueing more memory
// and latency. When all in-flight slots are busy, items keep queueing, so
// batches grow with load; that is where the throughput comes from.
//
// One goroutine (the dispatcher) forms batches; each batch runs in its own
// goroutine. Both recover panics. Close stops admission, drains and waits.
type Batcher[In, Out any] struct {
	name       string
	cfg        BatcherConfig
	flush      FlushFunc[In, Out]
	log        *zap.Logger
	retryAfter time.Duration

	mu     sync.RWMutex // guards closed and the close of queue against Submit's send
	closed bool
	queue  chan *call[In, Out]

	slots      chan struct{} // one token per in-flight batch
	inflightWG sync.WaitGroup

	runCtx    context.Context // parent of every flush; canceled when Close gives up
	cancelRun context.CancelFunc
	abandon   chan struct{} // closed when Close's context ends before the drain finished
	abandonMu sync.Once
	done      chan struct{} // closed when the dispatcher has exited

	inflightMu sync.Mutex
	inflight   map[*[]*call[In, Out]]struct{} // batches being flushed, for abandoning

	mBatchSize, mQueueWait prometheus.Observer
	mDepth, mInflight      prometheus.Gauge
	m                      *Metrics
}

type call[In, Out any] struct {
	ctx      context.Context
	in       In
	enqueued time.Time
	finished atomic.Bool // set by whoever completes the call first
	done     chan result[Out]
}

type result[Out any] struct {
	out Out
	err error
}

// finish delivers the result unless the call was already completed (by its
// caller giving up, or by Close abandoning it). It never blocks.
func (c *call[In, Out]) finish(out Out, err error) bool {
	if !c.finished.CompareAndSwap(false, true) {
		return false
	}
	c.done <- result[Out]{out: out, err: err}
	return true
}

// alive reports whether the call still wants a result.
func (c *call[In, Out]) alive() bool {
	return !c.finished.Load() && c.ctx.Err() == nil
}

// NewBatcher starts a batcher named name (the "model" metric label) that
// sends batches through flush. cfg must be valid (Config.Validate). m may be
// shared between batchers; nil creates unregistered metrics. retryAfter is the
// hint sent with Overloaded refusals.
func NewBatcher[In, Out any](name string, cfg BatcherConfig, flush FlushFunc[In, Out], m *Metrics, logger *zap.Logger, retryAfter time.Duration) *Batcher[In, Out] {
	if m == nil {
		m = NewMetrics(nil)
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	runCtx, cancel := context.WithCancel(context.Background())
	b := &Batcher[In, Out]{
		name:       name,
		cfg:        cfg,
		flush:      flush,
		log:        logger.With(zap.String("model", name)),
		retryAfter: retryAfter,
		queue:      make(chan *call[In, Out], cfg.QueueSize),
		slots:      make(chan struct{}, cfg.MaxInflight),
		runCtx:     runCtx,
		cancelRun:  cancel,
		abandon:    make(chan struct{}),
		done:       make(chan struct{}),
		inflight:   make(map[*[]*call[In, Out]]struct{}),
		mBatchSize: m.batchSize.WithLabelValues(name),
		mQueueWait: m.queueWait.WithLabelValues(name),
		mDepth:     m.queueDepth.WithLabelValues(name),
		mInflight:  m.inflight.WithLabelValues(name),
		m:          m,
	}
	go b.run()
	return b
}

// Submit queues in for the next batch and waits for its result. It returns
// at once with apierr.Overloaded when the queue is full and apierr.Unavailable
// after Close; when ctx ends first it returns Timeout or Canceled and the item
// is skipped if its batch was not sent yet. in belongs to the batcher until
// Submit returns a result: after a return because ctx ended, a batch being
// sent may still read it, so the caller must not modify or reuse it.
func (b *Batcher[In, Out]) Submit(ctx context.Context, in In) (Out, error) {
	var zero Out
	if ctx.Err() != nil {
		return zero, b.ctxError(ctx)
	}
	c := &call[In, Out]{ctx: ctx, in: in, enqueued: time.Now(), done: make(chan result[Out], 1)}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		b.m.refusals.WithLabelValues(b.name, refusedClosed).Inc()
		return zero, b.closedError()
	}
	select {
	case b.queue <- c:
		b.mDepth.Inc()
		b.mu.RUnlock()
	default:
		b.mu.RUnlock()
		b.m.refusals.WithLabelValues(b.name, refusedQueueFull).Inc()
		return zero, apierr.New(apierr.Overloaded, CodeQueueFull,
			"too many pending %s requests (queue of %d is full)", b.name, b.cfg.QueueSize).WithRetryAfter(b.retryAfter)
	}
	select {
	case r := <-c.done:
		return r.out, r.err
	case <-ctx.Done():
		if c.finished.CompareAndSwap(false, true) {
			return zero, b.ctxError(ctx)
		}
		// The result was being delivered at the same moment: use it.
		r := <-c.done
		return r.out, r.err
	}
}

// Do runs a batch the caller already formed (bulk ingest), split into
// chunks of at most MaxBatchSize, through the same in-flight limit as Submit's
// batches. It waits for a free slot as long as ctx allows.
func (b *Batcher[In, Out]) Do(ctx context.Context, items []In) ([]Out, error) {
	outs := make([]Out, 0, len(items))
	for start := 0; start < len(items); start += b.cfg.MaxBatchSize {
		end := min(start+b.cfg.MaxBatchSize, len(items))
		part, err := b.doChunk(ctx, items[start:end])
		if err != nil {
			return nil, err
		}
		outs = append(outs, part...)
	}
	return outs, nil
}

func (b *Batcher[In, Out]) doChunk(ctx context.Context, items []In) ([]Out, error) {
	if ctx.Err() != nil {
		return nil, b.ctxError(ctx)
	}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		b.m.refusals.WithLabelValues(b.name, refusedClosed).Inc()
		return nil, b.closedError()
	}
	b.inflightWG.Add(1) // before Close can start waiting: it needs b.mu first
	b.mu.RUnlock()
	defer b.inflightWG.Done()

	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, b.ctxError(ctx)
	case <-b.abandon:
		return nil, b.closedError()
	}
	defer func() { <-b.slots }()

	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(b.runCtx, cancel) // Close giving up aborts the call
	defer stop()

	b.mBatchSize.Observe(float64(len(items)))
	b.mInflight.Inc()
	outs, err := b.safeFlush(fctx, items)
	b.mInflight.Dec()
	if err != nil {
		return nil, err
	}
	return outs, nil
}

// Close stops admission (Submit then returns Unavailable), sends what is
// queued and waits for every in-flight batch. If ctx ends first it cancels
// the in-flight calls, fails everything still pending with Unavailable, and
// returns an error. Close may be called more than once.
func (b *Batcher[In, Out]) Close(ctx context.Context) error {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.queue)
	}
	b.mu.Unlock()

	drained := make(chan struct{})
	go func() { // ends when the dispatcher and every flush have returned
		<-b.done
		b.inflightWG.Wait()
		close(drained)
	}()
	select {
	case <-drained:
		b.cancelRun()
		return nil
	case <-ctx.Done():
	}
	b.abandonMu.Do(func() { close(b.abandon) })
	n := b.failInflight() // first, so callers see Unavailable, not the cancellation below
	b.cancelRun()
	<-b.done // the dispatcher fails what is queued and exits without blocking
	return fmt.Errorf("triton batcher %s: close: %w (abandoned %d in-flight items)", b.name, ctx.Err(), n)
}

// run is the dispatcher loop. It takes an in-flight slot before the first
// item of a batch, so while all slots are busy items pile up in the queue and
// the next batch is as full as the load allows.
func (b *Batcher[In, Out]) run() {
	defer close(b.done)
	for {
		select {
		case b.slots <- struct{}{}:
		case <-b.abandon:
			b.failQueued()
			return
		}
		more := b.safeRound()
		if !more {
			return
		}
	}
}

// safeRound forms and sends one batch; it owns the slot taken by run. It
// returns false when the queue is closed and empty (or abandoned).
func (b *Batcher[In, Out]) safeRound() (more bool) {
	sent := false
	defer func() {
		if r := recover(); r != nil {
			b.log.Error("triton batcher: panic in dispatcher", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			more = true
		}
		if !sent {
			<-b.slots
		}
	}()
	batch, more := b.collect()
	if len(batch) == 0 {
		return more
	}
	b.send(batch)
	sent = true
	return more
}

// collect gathers one batch: the first live item, then more until the batch
// is full or MaxDelay has passed since the first item was queued. It prefers
// queued items over an expired timer, so a backlog always leaves in full
// batches.
func (b *Batcher[In, Out]) collect() (batch []*call[In, Out], more bool) {
	var first *call[In, Out]
	for first == nil {
		select {
		case c, ok := <-b.queue:
			if !ok {
				return nil, false
			}
			b.mDepth.Dec()
			if b.skipDead(c) {
				continue
			}
			first = c
		case <-b.abandon:
			b.failQueued()
			return nil, false
		}
	}
	batch = make([]*call[In, Out], 1, b.cfg.MaxBatchSize)
	batch[0] = first
	timer := time.NewTimer(time.Until(first.enqueued.Add(b.cfg.MaxDelay)))
	defer timer.Stop()
	for len(batch) < b.cfg.MaxBatchSize {
		var c *call[In, Out]
		var ok bool
		select {
		case c, ok = <-b.queue:
		default:
			select {
			case c, ok = <-b.queue:
			case <-timer.C:
				return batch, true
			case <-b.abandon:
				b.abandonCalls(batch)
				b.failQueued()
				return nil, false
			}
		}
		if !ok {
			return batch, false // closed: no more items will come, send now
		}
		b.mDepth.Dec()
		if !b.skipDead(c) {
			batch = append(batch, c)
		}
	}
	return batch, true
}

// skipDead completes a call whose caller already gave up and reports whether
// it did so.
func (b *Batcher[In, Out]) skipDead(c *call[In, Out]) bool {
	if c.alive() {
		return false
	}
	var zero Out
	c.finish(zero, b.ctxError(c.ctx))
	b.m.refusals.WithLabelValues(b.name, refusedExpired).Inc()
	return true
}

// send flushes batch in its own goroutine with the earliest caller deadline.
// It owns the in-flight slot taken by run.
func (b *Batcher[In, Out]) send(batch []*call[In, Out]) {
	// Callers may have given up while the batch was forming.
	live := batch[:0]
	for _, c := range batch {
		if !b.skipDead(c) {
			live = append(live, c)
		}
	}
	if len(live) == 0 {
		<-b.slots
		return
	}
	now := time.Now()
	var earliest time.Time
	items := make([]In, len(live))
	for i, c := range live {
		items[i] = c.in
		if d, ok := c.ctx.Deadline(); ok && (earliest.IsZero() || d.Before(earliest)) {
			earliest = d
		}
		b.mQueueWait.Observe(now.Sub(c.enqueued).Seconds())
	}
	b.mBatchSize.Observe(float64(len(live)))

	ctx, cancel := b.runCtx, context.CancelFunc(func() {})
	if !earliest.IsZero() {
		ctx, cancel = context.WithDeadline(b.runCtx, earliest)
	}
	b.track(&live)
	b.inflightWG.Add(1)
	b.mInflight.Inc()
	go func() {
		defer b.inflightWG.Done()
		defer func() { <-b.slots }()
		defer b.mInflight.Dec()
		defer b.untrack(&live)
		defer cancel()
		outs, err := b.safeFlush(ctx, items)
		var zero Out
		for i, c := range live {
			if err != nil {
				c.finish(zero, err)
			} else {
				c.finish(outs[i], nil)
			}
		}
	}()
}

// safeFlush calls flush, turning a panic or a wrong result count into an
// Internal error, and counts failures by kind.
func (b *Batcher[In, Out]) safeFlush(ctx context.Context, items []In) (outs []Out, err error) {
	defer func() {
		if r := recover(); r != nil {
			b.log.Error("triton batcher: panic in flush", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			outs, err = nil, apierr.New(apierr.Internal, CodeInternal, "%s inference failed unexpectedly", b.name)
		}
		if err != nil {
			b.m.errorsTotal.WithLabelValues(b.name, apierr.KindOf(err).String()).Inc()
		}
	}()
	outs, err = b.flush(ctx, items)
	if err == nil && len(outs) != len(items) {
		err = apierr.New(apierr.Internal, CodeInternal, "%s batch returned %d results for %d items", b.name, len(outs), len(items))
	}
	if err != nil && b.runCtx.Err() != nil {
		err = b.closedError() // aborted by Close, whatever the flush made of it
	}
	if err != nil {
		if apierr.As(err) == nil {
			err = apierr.Wrap(err, apierr.Internal, CodeInternal, "%s inference failed", b.name)
		}
		return nil, err
	}
	return outs, nil
}

func (b *Batcher[In, Out]) track(batch *[]*call[In, Out]) {
	b.inflightMu.Lock()
	b.inflight[batch] = struct{}{}
	b.inflightMu.Unlock()
}

func (b *Batcher[In, Out]) untrack(batch *[]*call[In, Out]) {
	b.inflightMu.Lock()
	delete(b.inflight, batch)
	b.inflightMu.Unlock()
}

// failInflight completes every call of every in-flight batch with
// Unavailable; their flushes' late results are then dropped.
func (b *Batcher[In, Out]) failInflight() int {
	b.inflightMu.Lock()
	defer b.inflightMu.Unlock()
	n := 0
	for batch := range b.inflight {
		n += b.abandonCalls(*batch)
	}
	return n
}

// failQueued completes everything still queued with Unavailable. Only the
// dispatcher calls it, after abandon is closed (queue is closed by then).
func (b *Batcher[In, Out]) failQueued() {
	for c := range b.queue {
		b.mDepth.Dec()
		b.abandonCalls([]*call[In, Out]{c})
	}
}

func (b *Batcher[In, Out]) abandonCalls(calls []*call[In, Out]) int {
	var zero Out
	n := 0
	for _, c := range calls {
		if c.finish(zero, b.closedError()) {
			b.m.refusals.WithLabelValues(b.name, refusedAbandoned).Inc()
			n++
		}
	}
	return n
}

func (b *Batcher[In, Out]) closedError() *apierr.Error {
	return apierr.New(apierr.Unavailable, CodeShuttingDown, "%s encoder is shutting down", b.name).WithRetryAfter(b.retryAfter)
}

func (b *Batcher[In, Out]) ctxError(ctx context.Context) *apierr.Error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return apierr.Wrap(ctx.Err(), apierr.Timeout, CodeTimeout, "deadline passed waiting for %s inference", b.name)
	}
	return apierr.Wrap(ctx.Err(), apierr.Canceled, CodeCanceled, "%s inference canceled", b.name)
}
