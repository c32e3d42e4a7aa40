package embed

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/preprocess"
	"github.com/tusou/tusou/triton"
)

func TestNormalize(t *testing.T) {
	v := []float32{3, 4}
	if err := Normalize(v); err != nil {
		t.Fatal(err)
	}
	if math.Abs(float64(v[0])-0.6) > 1e-7 || math.Abs(float64(v[1])-0.8) > 1e-7 {
		t.Fatalf("got %v", v)
	}
	for _, bad := range [][]float32{{0, 0}, {float32(math.NaN()), 1}, {float32(math.Inf(1)), 0}} {
		if err := Normalize(bad); apierr.KindOf(err) != apierr.BadGateway {
			t.Errorf("%v: want BadGateway, got %v", bad, err)
		}
	}
}

func TestLimiterBoundsConcurrencyAndQueue(t *testing.T) {
	refused := atomic.Int64{}
	l := NewLimiter(2, 3, func() { refused.Add(1) })
	release := make(chan struct{})
	var running, peak atomic.Int64
	var wg sync.WaitGroup
	results := make(chan error, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- l.Do(context.Background(), func() error {
				n := running.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				<-release
				running.Add(-1)
				return nil
			})
		}()
	}
	// 2 run, 3 wait, 5 are refused at once.
	for refused.Load() < 5 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	close(results)
	ok, overloaded := 0, 0
	for err := range results {
		switch {
		case err == nil:
			ok++
		case apierr.KindOf(err) == apierr.Overloaded && apierr.As(err).RetryAfter > 0:
			overloaded++
		default:
			t.Errorf("unexpected error %v", err)
		}
	}
	if ok != 5 || overloaded != 5 || peak.Load() > 2 {
		t.Fatalf("ok=%d overloaded=%d peak=%d, want 5, 5, <=2", ok, overloaded, peak.Load())
	}
}

func TestLimiterHonoursContext(t *testing.T) {
	l := NewLimiter(1, 1, nil)
	hold := make(chan struct{})
	go l.Do(context.Background(), func() error { <-hold; return nil })
	time.Sleep(10 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := l.Do(ctx, func() error { t.Error("must not run"); return nil })
	close(hold)
	if apierr.KindOf(err) != apierr.Timeout {
		t.Fatalf("want Timeout, got %v", err)
	}
}

type fakePre struct{ err error }

func (f fakePre) Preprocess(_ context.Context, data []byte, dst []float32) (preprocess.Info, error) {
	if f.err != nil {
		return preprocess.Info{}, f.err
	}
	for i := range dst {
		dst[i] = float32(len(data))
	}
	return preprocess.Info{Format: "png", Width: 1, Height: 1}, nil
}

type fakeModel struct{ got []float32 }

func (f *fakeModel) Embed(_ context.Context, pixels []float32) ([]float32, error) {
	f.got = append([]float32(nil), pixels...)
	return []float32{0, 2}, nil
}

func TestImagesEmbed(t *testing.T) {
	m := &fakeModel{}
	e := NewImages(fakePre{}, m, 4, NewLimiter(1, 1, nil))
	vec, info, err := e.Embed(context.Background(), []byte("abc"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != "png" || len(m.got) != 4 || m.got[0] != 3 || vec[1] != 1 {
		t.Fatalf("vec=%v info=%+v model got %v", vec, info, m.got)
	}
	bad := apierr.New(apierr.Unprocessable, "image_corrupt", "x")
	if _, _, err := NewImages(fakePre{err: bad}, m, 4, NewLimiter(1, 1, nil)).Embed(context.Background(), nil); !errors.Is(err, bad) {
		t.Fatalf("preprocess error not returned: %v", err)
	}
}

// filler writes the call number into every value of the tensor, so a buffer
// reused by a later call is visible in its content.
type filler struct{ calls atomic.Int64 }

func (f *filler) Preprocess(_ context.Context, _ []byte, dst []float32) (preprocess.Info, error) {
	v := float32(f.calls.Add(1))
	for i := range dst {
		dst[i] = v
	}
	return preprocess.Info{Format: "png", Width: 1, Height: 1}, nil
}

// TestCanceledEmbedDoesNotRecycleTensorInUse: a caller that gives up returns
// from the real triton batcher's Submit while the batch it joined may still
// be reading its tensor (the flush copies it into the gRPC request). Embed
// must not hand that tensor to the next request: the flush would send the
// next image's pixels for this one (and -race reports the write).
func TestCanceledEmbedDoesNotRecycleTensorInUse(t *testing.T) {
	const n = 64
	for round := 0; round < 20; round++ {
		inFlush := make(chan struct{})
		release := make(chan struct{})
		seen := make(chan float32, 1)
		var flushes atomic.Int64
		flush := func(_ context.Context, items [][]float32) ([][]float32, error) {
			first := flushes.Add(1) == 1
			if first { // the first call's batch: held until released
				close(inFlush)
				<-release
			}
			// What the gRPC request would carry: a copy of every value.
			var sum float32
			for _, v := range items[0] {
				sum += v
			}
			if first {
				seen <- sum / n
			}
			return [][]float32{{1, 0}}, nil
		}
		b := triton.NewBatcher("clip_image", triton.BatcherConfig{MaxBatchSize: 1, MaxDelay: time.Millisecond, QueueSize: 4, MaxInflight: 2},
			flush, nil, nil, time.Second)
		e := NewImages(&filler{}, batcherModel{b}, n, NewLimiter(1, 4, nil))

		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { _, _, err := e.Embed(ctx, []byte("first")); errc <- err }()
		<-inFlush
		cancel() // the client went away while its batch is in flight
		if err := <-errc; apierr.KindOf(err) != apierr.Canceled {
			t.Fatalf("first embed: want Canceled, got %v", err)
		}
		// The next request reuses a pooled tensor if Embed recycled the first one.
		if _, _, err := e.Embed(context.Background(), []byte("second")); err != nil {
			t.Fatal(err)
		}
		close(release)
		if got := <-seen; got != 1 {
			t.Fatalf("round %d: the first image's batch sent the values of call %v: its tensor was reused while in flight", round, got)
		}
		if err := b.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

type batcherModel struct {
	b *triton.Batcher[[]float32, []float32]
}

func (m batcherModel) Embed(ctx context.Context, px []float32) ([]float32, error) {
	return m.b.Submit(ctx, px)
}
