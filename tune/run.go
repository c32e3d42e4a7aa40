// Package tune finds the gateway's image batcher settings for a latency
// target (`tusou tune`). It sweeps max_batch_size, max_delay and max_inflight
// at several offered loads, running the gateway's own decode, preprocess and
// micro-batcher code in-process against a live Triton, reads Triton's
// metrics around each step, and reports the setting with the best throughput
// whose p99 meets the target, with the configuration lines to use.
package tune

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tusou/tusou/apierr"
)

// Setting is one point of the sweep: the gateway image batcher's knobs and
// the offered load (concurrent callers, each sending one image at a time,
// like concurrent HTTP requests of one image each).
type Setting struct {
	MaxBatch    int
	MaxDelay    time.Duration
	MaxInflight int
	Concurrency int
}

func (s Setting) String() string {
	return fmt.Sprintf("batch=%d delay=%s inflight=%d concurrency=%d", s.MaxBatch, s.MaxDelay, s.MaxInflight, s.Concurrency)
}

// Result is what one step measured.
type Result struct {
	Setting
	Duration   time.Duration // measured phase (warm-up excluded)
	OK         int           // images embedded
	Refused    int           // apierr.Overloaded: a gateway or Triton queue was full
	Failed     int           // any other error
	Throughput float64       // OK per second
	P50, P99   time.Duration // latency of successful calls
	// GatewayBatch is the average items per ModelInfer call the gateway sent
	// (its tusou_triton_batch_size histogram).
	GatewayBatch float64
	// Triton is what Triton's own counters saw during the measured phase.
	Triton TritonDelta
}

// Pipeline is the gateway's image path for one setting: decode, preprocess,
// micro-batcher, Triton. The real one is built by NewPipelineFactory.
type Pipeline interface {
	// Embed runs one image through the whole path.
	Embed(ctx context.Context, data []byte) error
	// BatchStats returns the gateway batcher's (batches, items) so far.
	BatchStats() (batches, items float64)
	// Close drains and releases the pipeline.
	Close(ctx context.Context) error
}

// PipelineFactory builds a pipeline for one setting.
type PipelineFactory func(ctx context.Context, s Setting) (Pipeline, error)

// MetricsSource snapshots Triton's counters for the tuned model.
type MetricsSource interface {
	Snapshot(ctx context.Context) (TritonSnapshot, error)
}

// Plan is a sweep: the settings to measure and how long to spend on each.
type Plan struct {
	Settings []Setting
	Step     time.Duration // measured time per setting
	Warmup   time.Duration // unmeasured load before each step (connection, first batches)
	// MaxRate caps the offered images per second over all callers (0: no
	// cap), so a sweep against a production Triton stays at a chosen load.
	MaxRate float64
}

// Runner runs plans against a pipeline factory and Triton's metrics.
type Runner struct {
	Factory PipelineFactory
	Metrics MetricsSource // nil: Triton columns stay empty
	Images  [][]byte      // the corpus, sent round-robin
	// Progress, if set, is called after each step (for a live table).
	Progress func(Result)
}

// Run measures every setting of p in order. It stops early, returning what
// it measured, when ctx ends.
func (r *Runner) Run(ctx context.Context, p Plan) ([]Result, error) {
	if len(r.Images) == 0 {
		return nil, errors.New("tune: no images to send")
	}
	var out []Result
	for _, s := range p.Settings {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		res, err := r.Step(ctx, s, p)
		if err != nil {
			return out, fmt.Errorf("%s: %w", s, err)
		}
		out = append(out, res)
		if r.Progress != nil {
			r.Progress(res)
		}
	}
	return out, nil
}

// Step measures one setting: build the pipeline, warm it up, snapshot the
// counters, offer load for p.Step, snapshot again.
func (r *Runner) Step(ctx context.Context, s Setting, p Plan) (Result, error) {
	pl, err := r.Factory(ctx, s)
	if err != nil {
		return Result{}, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pl.Close(cctx)
	}()
	var next atomic.Int64 // round-robin over the corpus, shared by both phases
	if p.Warmup > 0 {
		r.load(ctx, pl, s.Concurrency, p.Warmup, p.MaxRate, &next, nil)
	}
	b0, i0 := pl.BatchStats()
	var t0 TritonSnapshot
	if r.Metrics != nil {
		if t0, err = r.Metrics.Snapshot(ctx); err != nil {
			return Result{}, fmt.Errorf("triton metrics: %w", err)
		}
	}
	rec := &recorder{}
	start := time.Now()
	r.load(ctx, pl, s.Concurrency, p.Step, p.MaxRate, &next, rec)
	elapsed := time.Since(start)
	b1, i1 := pl.BatchStats()
	res := Result{Setting: s, Duration: elapsed, OK: len(rec.lat), Refused: rec.refused, Failed: rec.failed}
	if r.Metrics != nil {
		t1, err := r.Metrics.Snapshot(ctx)
		if err != nil {
			return Result{}, fmt.Errorf("triton metrics: %w", err)
		}
		res.Triton = t1.Sub(t0)
	}
	res.Throughput = float64(res.OK) / elapsed.Seconds()
	res.P50, res.P99 = percentile(rec.lat, 0.50), percentile(rec.lat, 0.99)
	res.GatewayBatch = math.NaN()
	if b1 > b0 {
		res.GatewayBatch = (i1 - i0) / (b1 - b0)
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, nil
}

// recorder collects one step's outcomes.
type recorder struct {
	mu              sync.Mutex
	lat             []time.Duration
	refused, failed int
}

func (r *recorder) add(d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err == nil:
		r.lat = append(r.lat, d)
	case apierr.KindOf(err) == apierr.Overloaded:
		r.refused++
	default:
		r.failed++
	}
}

// load runs conc closed-loop callers for d (each sends its next image as
// soon as the previous one is answered, paced by maxRate when set) and waits
// for all of them, so no call of this phase is still running afterwards.
func (r *Runner) load(ctx context.Context, pl Pipeline, conc int, d time.Duration, maxRate float64, next *atomic.Int64, rec *recorder) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := time.Now().Add(d)
	pace := newPacer(maxRate)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for time.Now().Before(stop) && ctx.Err() == nil {
				if err := pace.wait(ctx, stop); err != nil {
					return
				}
				img := r.Images[int(next.Add(1)-1)%len(r.Images)]
				t := time.Now()
				err := pl.Embed(ctx, img)
				if rec != nil && ctx.Err() == nil {
					rec.add(time.Since(t), err)
				}
				if err != nil && apierr.KindOf(err) == apierr.Overloaded {
					// A refusal answers at once; back off like a client
					// honouring Retry-After would, briefly, so a full queue
					// does not turn the step into a busy loop.
					select {
					case <-ctx.Done():
					case <-time.After(5 * time.Millisecond):
					}
				}
			}
		})
	}
	wg.Wait()
}

// pacer spaces calls 1/rate apart over all callers (nil: no cap).
type pacer struct {
	mu       sync.Mutex
	next     time.Time
	interval time.Duration
}

func newPacer(rate float64) *pacer {
	if rate <= 0 {
		return nil
	}
	return &pacer{interval: time.Duration(float64(time.Second) / rate)}
}

// wait blocks until the caller's slot; it returns an error when ctx ends or
// the slot falls after stop.
func (p *pacer) wait(ctx context.Context, stop time.Time) error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	at := p.next
	p.next = p.next.Add(p.interval)
	p.mu.Unlock()
	if at.After(stop) {
		return context.DeadlineExceeded
	}
	t := time.NewTimer(time.Until(at))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// percentile returns the q-quantile (nearest rank) of ds; 0 when empty.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}
