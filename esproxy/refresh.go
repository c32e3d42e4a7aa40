package esproxy

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/internal/promreg"
)

// CodeRefreshFailed marks an error from a write that WAS stored but could not
// be made searchable (the refresh failed or the caller stopped waiting for
// it). Retrying the write is safe: a create answers "exists".
const CodeRefreshFailed = "es_refresh_failed"

// refresher makes acknowledged writes searchable in milliseconds by group
// commit. Elasticsearch's refresh=wait_for parks each request until the next
// scheduled refresh (index.refresh_interval, 1 s by default); instead, writers
// whose write has returned register here and wait for the next explicit
// POST /<write index>/_refresh that STARTS after they registered, so their
// documents are in the segment it opens. One goroutine runs the refreshes: at
// most one is in flight, a refresh starts at least minInterval after the
// previous one ended, and every writer that registered while one was in
// flight (or during the spacing) is served by the single next one. Its
// outcome, error included, goes to every writer of that round.
type refresher struct {
	// refresh performs one refresh of the write index.
	refresh     func(ctx context.Context) error
	minInterval time.Duration
	timeout     time.Duration // bounds one refresh
	metrics     *refreshMetrics

	// kick wakes the loop: a writer registered (or asked to force).
	kick chan struct{}
	// stop is closed by close; exited is closed when the loop has returned.
	stop   chan struct{}
	exited chan struct{}
	// base parents every refresh; cancelled when close runs out of time.
	base       context.Context
	cancelBase context.CancelFunc
	startLoop  sync.Once
	// nwaiting counts writers inside wait (the tusou_es_refresh_waiting gauge).
	nwaiting atomic.Int64

	mu sync.Mutex
	// next is the round that new writers join; nil when nobody waits. The
	// loop detaches it (sets nil) just before starting its refresh.
	next   *round
	closed bool
}

// round is one refresh and the writers it serves.
type round struct {
	done    chan struct{} // closed when err is set
	err     error
	writers int
	// force skips the minimum interval (a writer asked for refresh=true).
	force bool
}

// errRefresherClosed is what writers still waiting at shutdown get.
var errRefresherClosed = errors.New("esproxy: client closed")

// newRefresher returns a refresher whose loop starts with the first writer;
// close stops it. reg may be nil to skip metrics.
func newRefresher(refresh func(context.Context) error, minInterval, timeout time.Duration, reg prometheus.Registerer) *refresher {
	base, cancel := context.WithCancel(context.Background())
	r := &refresher{
		refresh: refresh, minInterval: minInterval, timeout: timeout,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), exited: make(chan struct{}),
		base: base, cancelBase: cancel,
	}
	r.metrics = newRefreshMetrics(reg, r.waiting)
	return r
}

// waiting is the number of writers waiting for a refresh.
func (r *refresher) waiting() int { return int(r.nwaiting.Load()) }

// wait blocks until a refresh that started after this call has completed,
// so whatever the caller wrote before calling is searchable. force asks for
// that refresh without waiting out the minimum interval. The error is an
// *apierr.Error saying the write itself succeeded.
func (r *refresher) wait(ctx context.Context, force bool) error {
	start := time.Now()
	r.nwaiting.Add(1)
	defer r.nwaiting.Add(-1)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return notSearchable(apierr.New(apierr.Unavailable, CodeUnavailable, "the gateway is shutting down").
			WithRetryAfter(unavailableRetryAfter))
	}
	rd := r.next
	if rd == nil {
		rd = &round{done: make(chan struct{})}
		r.next = rd
	}
	rd.writers++
	rd.force = rd.force || force
	r.mu.Unlock()
	// The loop goroutine starts with the first writer, so a client that never
	// writes (or a test that forgets Close) owns none.
	r.startLoop.Do(func() { go r.run() })
	select {
	case r.kick <- struct{}{}:
	default: // a wake-up is already pending; it will find this round
	}

	select {
	case <-rd.done:
		r.metrics.wait.Observe(time.Since(start).Seconds())
		if rd.err != nil {
			return notSearchable(rd.err)
		}
		return nil
	case <-ctx.Done():
		// The round still runs for the others; leaving it costs nothing.
		return notSearchable(transportError(ctx, "refresh", ctx.Err()))
	}
}

// run is the loop that owns every refresh. It returns after close.
func (r *refresher) run() {
	defer close(r.exited)
	var last time.Time // when the previous refresh ended
	for {
		select {
		case <-r.stop:
			r.failPending()
			return
		case <-r.kick:
		}
		// Space refreshes: each one opens a Lucene segment (on vector indices
		// one more HNSW graph to search until merged), so Elasticsearch gets
		// at least minInterval of quiet between two. Writers arriving
		// meanwhile join the same round: that is the group commit.
		for wait := time.Until(last.Add(r.minInterval)); wait > 0 && !r.forced(); wait = time.Until(last.Add(r.minInterval)) {
			t := time.NewTimer(wait)
			select {
			case <-r.stop:
				t.Stop()
				r.failPending()
				return
			case <-r.kick: // maybe a forcing writer: look again
				t.Stop()
			case <-t.C:
			}
		}
		r.mu.Lock()
		rd := r.next
		r.next = nil
		r.mu.Unlock()
		if rd == nil {
			continue // a stale wake-up from a round already served
		}
		rd.err = r.refreshOnce()
		last = time.Now()
		r.metrics.writers.Observe(float64(rd.writers))
		close(rd.done)
	}
}

// refreshOnce runs one refresh; a panic becomes the round's error rather
// than killing the loop and stranding every later writer.
func (r *refresher) refreshOnce() (err error) {
	ctx, cancel := context.WithTimeout(r.base, r.timeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			err = apierr.New(apierr.Internal, "internal", "esproxy: refresh panicked: %v", p)
		}
	}()
	return r.refresh(ctx)
}

// forced reports whether the waiting round asked to skip the interval.
func (r *refresher) forced() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.next != nil && r.next.force
}

// failPending releases the writers of a round that will never run.
func (r *refresher) failPending() {
	r.mu.Lock()
	rd := r.next
	r.next = nil
	r.mu.Unlock()
	if rd != nil {
		rd.err = apierr.Wrap(errRefresherClosed, apierr.Unavailable, CodeUnavailable, "the gateway is shutting down").
			WithRetryAfter(unavailableRetryAfter)
		close(rd.done)
	}
}

// close stops the loop: new writers are refused, waiting ones released with
// an error, and an in-flight refresh may finish until ctx ends (then it is
// cancelled). The gateway drains its requests before closing, so normally
// nobody waits.
func (r *refresher) close(ctx context.Context) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.mu.Unlock()
	close(r.stop)
	started := true
	r.startLoop.Do(func() { started = false }) // from now on no loop can start
	if !started {
		// A writer may have registered but lost the race to start the loop.
		r.failPending()
		r.cancelBase()
		return
	}
	select {
	case <-r.exited:
	case <-ctx.Done():
		r.cancelBase()
		<-r.exited
	}
	r.cancelBase()
}

// notSearchable rewords err for a write that was stored but whose refresh
// did not complete: the client must know that the data is there.
func notSearchable(err error) error {
	e := apierr.As(err)
	if e == nil {
		e = apierr.Wrap(err, apierr.BadGateway, CodeBadGateway, "%v", err)
	}
	kind := e.Kind
	switch kind {
	case apierr.BadGateway, apierr.Unavailable, apierr.Timeout, apierr.Canceled:
	default:
		// A refresh refused for any other reason (index gone, 4xx) is still
		// Elasticsearch failing us, not the client's request.
		kind = apierr.BadGateway
	}
	return apierr.Wrap(err, kind, CodeRefreshFailed,
		"the write succeeded but is not yet searchable: %s (it will be within the index refresh interval; retrying is safe)", e.Message).
		WithRetryAfter(e.RetryAfter)
}

// refreshWriteIndex is the refresher's refresh: POST /<write index>/_refresh.
// Only the index writes go to is refreshed; other indices behind the alias
// (older generations) do not change.
func (c *Client) refreshWriteIndex(ctx context.Context) error {
	index := c.cfg.Index // before EnsureIndex: the alias (all its indices)
	if w := c.writeIndex.Load(); w != nil {
		index = *w
	}
	return c.refreshIndex(ctx, index)
}

// refreshIndex is POST /<index>/_refresh, failing unless every shard copy
// refreshed.
func (c *Client) refreshIndex(ctx context.Context, index string) (err error) {
	defer c.observe("refresh", time.Now(), &err)
	res, err := c.perform(ctx, "refresh", esapi.IndicesRefreshRequest{
		Index:      []string{index},
		FilterPath: []string{"_shards"},
	})
	if err != nil {
		return err
	}
	b := readBody(res.Body, 64<<10)
	res.Body.Close()
	var out struct {
		Shards struct {
			Total, Successful, Failed int
		} `json:"_shards"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return apierr.Wrap(err, apierr.BadGateway, CodeBadGateway, "elasticsearch refresh: unreadable answer")
	}
	if out.Shards.Failed > 0 || out.Shards.Successful == 0 {
		// A shard that did not refresh leaves its new documents invisible.
		return apierr.New(apierr.BadGateway, CodeBadGateway,
			"elasticsearch refreshed %d of %d shard copies of %q (%d failed)",
			out.Shards.Successful, out.Shards.Total, index, out.Shards.Failed)
	}
	return nil
}

// waitSearchable applies a resolved refresh policy after a successful write:
// wait_for and true wait for the coalesced refresh (true without the
// minimum interval), false returns at once.
func (c *Client) waitSearchable(ctx context.Context, refresh string) error {
	switch refresh {
	case RefreshFalse:
		return nil
	case RefreshTrue:
		return c.refresher.wait(ctx, true)
	}
	return c.refresher.wait(ctx, false)
}

// refreshMetrics describe the group commit. Refreshes themselves are
// tusou_es_requests_total{op="refresh"} (by outcome) and
// tusou_es_request_duration_seconds{op="refresh"}.
type refreshMetrics struct {
	writers prometheus.Histogram
	wait    prometheus.Histogram
	waiting prometheus.GaugeFunc
}

func newRefreshMetrics(reg prometheus.Registerer, waiting func() int) *refreshMetrics {
	m := &refreshMetrics{
		waiting: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tusou_es_refresh_waiting",
			Help: "Writes stored and waiting for the refresh that makes them searchable.",
		}, func() float64 { return float64(waiting()) }),
		writers: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tusou_es_refresh_writers",
			Help: "Writes made searchable by one coalesced refresh (group commit size).",
			// 1 .. 1024: one writer when idle, up to the request concurrency under load.
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tusou_es_refresh_wait_seconds",
			Help: "Time a write waited, after Elasticsearch acknowledged it, until a refresh made it searchable.",
			// 0.5ms .. ~4s: a refresh is milliseconds; seconds mean trouble.
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	m.writers = promreg.Register(reg, m.writers)
	m.wait = promreg.Register(reg, m.wait)
	m.waiting = promreg.Register(reg, m.waiting)
	return m
}

// WaitSearchable makes the writes this client has acknowledged so far
// searchable as refresh says ("" is Config.Refresh): for callers that write
// with refresh=false and then do more work (store originals, write a second
// generation) before the documents may become visible.
func (c *Client) WaitSearchable(ctx context.Context, refresh string) error {
	r, err := c.refreshParam(refresh)
	if err != nil {
		return err
	}
	return c.waitSearchable(ctx, r)
}
