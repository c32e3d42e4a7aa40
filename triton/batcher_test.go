package triton

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/tusou/tusou/apierr"
)

// gatedFlush is a flush func that records batches and, while the gate is
// closed, blocks each batch until it opens, so tests control timing without
// sleeping.
type gatedFlush struct {
	mu        sync.Mutex
	batches   [][]int
	deadlines []time.Time
	gate      chan struct{}
	entered   chan struct{} // receives once per batch, when flush starts
	fail      error
	panicOn   int // panic on batches containing this item (0: never)
}

func newGatedFlush(open bool) *gatedFlush {
	g := &gatedFlush{gate: make(chan struct{}), entered: make(chan struct{}, 1000)}
	if open {
		close(g.gate)
	}
	return g
}

func (g *gatedFlush) flush(ctx context.Context, items []int) ([]int, error) {
	g.mu.Lock()
	g.batches = append(g.batches, slices.Clone(items))
	d, _ := ctx.Deadline()
	g.deadlines = append(g.deadlines, d)
	fail, panicOn := g.fail, g.panicOn
	g.mu.Unlock()
	g.entered <- struct{}{}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if panicOn != 0 && slices.Contains(items, panicOn) {
		panic("boom")
	}
	if fail != nil {
		return nil, fail
	}
	outs := make([]int, len(items))
	for i, v := range items {
		outs[i] = v * 10
	}
	return outs, nil
}

func (g *gatedFlush) sizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := make([]int, len(g.batches))
	for i, b := range g.batches {
		s[i] = len(b)
	}
	return s
}

func newTestBatcher(t *testing.T, cfg BatcherConfig, g *gatedFlush) (*Batcher[int, int], *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	b := NewBatcher("test_model", cfg, g.flush, NewMetrics(reg), zaptest.NewLogger(t), time.Second)
	t.Cleanup(func() {
		select {
		case <-g.gate:
		default:
			close(g.gate)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	return b, reg
}

func depth(t *testing.T, reg prometheus.Gatherer) float64 {
	return metricValue(t, reg, "tusou_triton_queue_depth", map[string]string{"model": "test_model"})
}

// submitAll submits items concurrently and returns their results/errors.
func submitAll(ctx context.Context, b *Batcher[int, int], items []int) ([]int, []error, *sync.WaitGroup) {
	outs := make([]int, len(items))
	errs := make([]error, len(items))
	var wg sync.WaitGroup
	for i, v := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = b.Submit(ctx, v)
		}()
	}
	return outs, errs, &wg
}

func seq(from, n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = from + i
	}
	return s
}

// 50 concurrent items, max batch 16, one in-flight slot held until all are
// queued: the batches are exactly 16, 16, 16 and (flushed by Close) 2.
func TestBatcherFormsFullBatches(t *testing.T) {
	g := newGatedFlush(false)
	b, reg := newTestBatcher(t, BatcherConfig{MaxBatchSize: 16, MaxDelay: time.Hour, QueueSize: 64, MaxInflight: 1}, g)

	items := seq(1, 50)
	outs, errs, wg := submitAll(context.Background(), b, items)
	<-g.entered // first batch of 16 is in flight and holds the only slot
	waitFor(t, "34 queued items", func() bool { return depth(t, reg) == 34 })
	close(g.gate)
	// The last 2 items wait for max_delay (an hour); Close sends them at once.
	if err := b.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()

	if got, want := g.sizes(), []int{16, 16, 16, 2}; !slices.Equal(got, want) {
		t.Fatalf("batch sizes %v, want %v", got, want)
	}
	for i, v := range items {
		if errs[i] != nil || outs[i] != v*10 {
			t.Fatalf("item %d: got %d, %v; want %d", v, outs[i], errs[i], v*10)
		}
	}
	if got := metricValue(t, reg, "tusou_triton_batch_size", nil); got != 4 {
		t.Errorf("batch_size histogram count %v, want 4", got)
	}
	if got := metricValue(t, reg, "tusou_triton_queue_wait_seconds", nil); got != 50 {
		t.Errorf("queue_wait histogram count %v, want 50", got)
	}
}

// With a short max_delay and free slots, every item is answered, each in
// exactly one batch of at most max_batch_size.
func TestBatcherMaxDelayFlushesPartialBatches(t *testing.T) {
	g := newGatedFlush(true)
	b, _ := newTestBatcher(t, BatcherConfig{MaxBatchSize: 16, MaxDelay: time.Millisecond, QueueSize: 64, MaxInflight: 4}, g)
	items := seq(1, 50)
	outs, errs, wg := submitAll(context.Background(), b, items)
	wg.Wait()
	for i, v := range items {
		if errs[i] != nil || outs[i] != v*10 {
			t.Fatalf("item %d: got %d, %v", v, outs[i], errs[i])
		}
	}
	total := 0
	for _, s := range g.sizes() {
		if s < 1 || s > 16 {
			t.Errorf("batch of %d items", s)
		}
		total += s
	}
	if total != 50 {
		t.Errorf("%d items in batches, want 50", total)
	}
	// A lone item is sent after max_delay without more company.
	if out, err := b.Submit(context.Background(), 7); err != nil || out != 70 {
		t.Fatalf("lone item: %d, %v", out, err)
	}
}

// The flush context carries the earliest deadline of the batch's callers.
func TestBatcherEarliestDeadline(t *testing.T) {
	g := newGatedFlush(true)
	b, _ := newTestBatcher(t, BatcherConfig{MaxBatchSize: 3, MaxDelay: time.Hour, QueueSize: 8, MaxInflight: 1}, g)
	base := time.Now().Add(time.Hour)
	deadlines := []time.Time{base.Add(3 * time.Minute), base.Add(time.Minute), base.Add(2 * time.Minute)}
	var wg sync.WaitGroup
	for i, d := range deadlines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithDeadline(context.Background(), d)
			defer cancel()
			if _, err := b.Submit(ctx, i+1); err != nil {
				t.Errorf("submit: %v", err)
			}
		}()
	}
	wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.deadlines) != 1 || !g.deadlines[0].Equal(slices.MinFunc(deadlines, time.Time.Compare)) {
		t.Fatalf("flush deadlines %v, want one batch with %v", g.deadlines, deadlines[1])
	}
}

// Items whose caller gave up while queued are never sent.
func TestBatcherSkipsExpiredItems(t *testing.T) {
	g := newGatedFlush(false)
	b, reg := newTestBatcher(t, BatcherConfig{MaxBatchSize: 4, MaxDelay: time.Hour, QueueSize: 8, MaxInflight: 1}, g)

	_, _, wg1 := submitAll(context.Background(), b, seq(1, 4)) // fills the only slot
	<-g.entered
	ctx, cancel := context.WithCancel(context.Background())
	_, errs, wg2 := submitAll(ctx, b, []int{100})
	waitFor(t, "queued item", func() bool { return depth(t, reg) == 1 })
	cancel()
	wg2.Wait()
	if k := apierr.KindOf(errs[0]); k != apierr.Canceled {
		t.Fatalf("canceled item: kind %v (%v), want canceled", k, errs[0])
	}
	outs, errs3, wg3 := submitAll(context.Background(), b, seq(5, 4))
	close(g.gate)
	wg1.Wait()
	wg3.Wait()
	for i, e := range errs3 {
		if e != nil || outs[i] != (5+i)*10 {
			t.Fatalf("item %d: %d %v", 5+i, outs[i], e)
		}
	}
	g.mu.Lock()
	for _, batch := range g.batches {
		if slices.Contains(batch, 100) {
			t.Errorf("expired item was sent: batches %v", g.batches)
		}
	}
	g.mu.Unlock()
	if got := metricValue(t, reg, "tusou_triton_refusals_total", map[string]string{"reason": refusedExpired}); got != 1 {
		t.Errorf("expired refusals %v, want 1", got)
	}
}

// A full queue refuses at once with Overloaded and a Retry-After hint.
func TestBatcherQueueFull(t *testing.T) {
	g := newGatedFlush(false)
	b, reg := newTestBatcher(t, BatcherConfig{MaxBatchSize: 1, MaxDelay: time.Hour, QueueSize: 4, MaxInflight: 1}, g)
	// One in flight first, then 4 to fill the queue: submitted all at once,
	// five could reach the queue before the dispatcher takes the first, and
	// the fifth would be the one refused.
	_, _, first := submitAll(context.Background(), b, seq(1, 1))
	<-g.entered
	_, _, wg := submitAll(context.Background(), b, seq(2, 4))
	waitFor(t, "full queue", func() bool { return depth(t, reg) == 4 })

	_, err := b.Submit(context.Background(), 99)
	e := apierr.As(err)
	if e == nil || e.Kind != apierr.Overloaded || e.Code != CodeQueueFull || e.RetryAfter <= 0 {
		t.Fatalf("got %#v, want Overloaded %s with RetryAfter", err, CodeQueueFull)
	}
	if got := metricValue(t, reg, "tusou_triton_refusals_total", map[string]string{"reason": refusedQueueFull}); got != 1 {
		t.Errorf("queue_full refusals %v, want 1", got)
	}
	close(g.gate)
	first.Wait()
	wg.Wait()
}

// Close refuses new items, sends the queued ones and waits for in-flight
// batches.
func TestBatcherCloseDrains(t *testing.T) {
	g := newGatedFlush(false)
	b, reg := newTestBatcher(t, BatcherConfig{MaxBatchSize: 2, MaxDelay: time.Hour, QueueSize: 16, MaxInflight: 1}, g)
	items := seq(1, 7)
	outs, errs, wg := submitAll(context.Background(), b, items)
	<-g.entered
	waitFor(t, "queued items", func() bool { return depth(t, reg) == 5 })

	closed := make(chan error)
	go func() { closed <- b.Close(context.Background()) }()
	waitFor(t, "admission to stop", func() bool {
		b.mu.RLock()
		defer b.mu.RUnlock()
		return b.closed
	})
	select {
	case err := <-closed:
		t.Fatalf("Close returned before the drain: %v", err)
	default:
	}
	close(g.gate)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	for i, v := range items {
		if errs[i] != nil || outs[i] != v*10 {
			t.Fatalf("item %d: %d %v", v, outs[i], errs[i])
		}
	}
	if got, want := g.sizes(), []int{2, 2, 2, 1}; !slices.Equal(got, want) {
		t.Errorf("batch sizes %v, want %v", got, want)
	}
	if e := apierr.As(func() error { _, err := b.Submit(context.Background(), 1); return err }()); e == nil || e.Kind != apierr.Unavailable {
		t.Errorf("Submit after Close: %v, want Unavailable", e)
	}
}

// When Close's context ends first, queued and in-flight items get
// Unavailable and Close reports it.
func TestBatcherCloseAbandons(t *testing.T) {
	g := newGatedFlush(false)
	b, reg := newTestBatcher(t, BatcherConfig{MaxBatchSize: 1, MaxDelay: time.Hour, QueueSize: 8, MaxInflight: 1}, g)
	_, errs, wg := submitAll(context.Background(), b, seq(1, 4))
	<-g.entered
	waitFor(t, "queued items", func() bool { return depth(t, reg) == 3 })

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close: %v, want context.Canceled", err)
	}
	wg.Wait()
	for i, err := range errs {
		if e := apierr.As(err); e == nil || e.Kind != apierr.Unavailable {
			t.Errorf("item %d: %v, want Unavailable", i+1, err)
		}
	}
	if got := metricValue(t, reg, "tusou_triton_refusals_total", map[string]string{"reason": refusedAbandoned}); got != 4 {
		t.Errorf("abandoned refusals %v, want 4", got)
	}
}

// A panicking flush fails its own batch with Internal; the batcher goes on.
func TestBatcherRecoversPanics(t *testing.T) {
	g := newGatedFlush(true)
	g.panicOn = 13
	b, reg := newTestBatcher(t, BatcherConfig{MaxBatchSize: 1, MaxDelay: time.Millisecond, QueueSize: 8, MaxInflight: 1}, g)
	if _, err := b.Submit(context.Background(), 13); apierr.KindOf(err) != apierr.Internal {
		t.Fatalf("panicking batch: %v, want Internal", err)
	}
	if out, err := b.Submit(context.Background(), 2); err != nil || out != 20 {
		t.Fatalf("after panic: %d %v", out, err)
	}
	if got := metricValue(t, reg, "tusou_triton_errors_total", map[string]string{"kind": "internal"}); got != 1 {
		t.Errorf("internal errors %v, want 1", got)
	}
}

// A batch error reaches every item of the batch unchanged.
func TestBatcherPropagatesBatchErrors(t *testing.T) {
	g := newGatedFlush(true)
	g.fail = apierr.New(apierr.BadGateway, CodeUpstreamError, "nope")
	b, _ := newTestBatcher(t, BatcherConfig{MaxBatchSize: 4, MaxDelay: time.Millisecond, QueueSize: 8, MaxInflight: 1}, g)
	_, errs, wg := submitAll(context.Background(), b, seq(1, 4))
	wg.Wait()
	for _, err := range errs {
		if !errors.Is(err, g.fail) {
			t.Fatalf("got %v, want %v", err, g.fail)
		}
	}
}

// Do splits a caller-formed batch into max_batch_size chunks, in order.
func TestBatcherDo(t *testing.T) {
	g := newGatedFlush(true)
	b, _ := newTestBatcher(t, BatcherConfig{MaxBatchSize: 4, MaxDelay: time.Millisecond, QueueSize: 8, MaxInflight: 2}, g)
	items := seq(1, 10)
	outs, err := b.Do(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range items {
		if outs[i] != v*10 {
			t.Fatalf("item %d: %d", v, outs[i])
		}
	}
	if got, want := g.sizes(), []int{4, 4, 2}; !slices.Equal(got, want) {
		t.Errorf("chunks %v, want %v", got, want)
	}
}
