package triton

import (
	"context"
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/triton/inferencepb"
)

// 50 concurrent image requests with max batch 16: every caller gets the
// vector of its own image, and the fake server saw batches of 1..16 adding up
// to 50, fewer calls than requests, and matching the batch_size metric.
func TestImageEncoderBatchesConcurrentCalls(t *testing.T) {
	cfg := testConfig()
	cfg.Image.Batcher.MaxBatchSize = 16
	f := newFakeTriton(cfg)
	c, reg := startFake(t, f, cfg)
	enc := NewImageEncoder(c)

	const n = 50
	got := make([][]float32, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = enc.Embed(context.Background(), randomImage(cfg.Image, i))
		}()
	}
	wg.Wait()
	if err := enc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("image %d: %v", i, errs[i])
		}
		if err := sliceEq(got[i], fakeImageEmbed(randomImage(cfg.Image, i), cfg.Image.Dims)); err != nil {
			t.Fatalf("image %d got another image's vector: %v", i, err)
		}
	}
	calls := f.inferCalls()
	total := 0
	for _, call := range calls {
		if call.batch < 1 || call.batch > 16 {
			t.Errorf("batch of %d", call.batch)
		}
		if want := []int64{int64(call.batch), 3, 224, 224}; !slices.Equal(call.shapes[0], want) {
			t.Errorf("shape %v, want %v", call.shapes[0], want)
		}
		total += call.batch
	}
	if total != n {
		t.Errorf("server saw %d images, want %d", total, n)
	}
	t.Logf("%d concurrent requests -> %d ModelInfer calls, batch sizes %v", n, len(calls), batchSizes(calls))
	if m := metricValue(t, reg, "tusou_triton_batch_size", map[string]string{"model": cfg.Image.Label()}); int(m) != len(calls) {
		t.Errorf("batch_size count %v, want %d", m, len(calls))
	}
}

func batchSizes(calls []inferCall) []int {
	s := make([]int, len(calls))
	for i, c := range calls {
		s[i] = c.batch
	}
	return s
}

// The request tensor is exactly the little-endian bytes of the inputs, in
// order, with the batch in the shape.
func TestImageEncoderEmbedBatchWire(t *testing.T) {
	cfg := testConfig()
	f := newFakeTriton(cfg)
	c, _ := startFake(t, f, cfg)
	enc := NewImageEncoder(c)
	defer enc.Close(context.Background())

	imgs := make([][]float32, 8)
	for i := range imgs {
		imgs[i] = randomImage(cfg.Image, 100+i)
	}
	vecs, err := enc.EmbedBatch(context.Background(), imgs)
	if err != nil {
		t.Fatal(err)
	}
	calls := f.inferCalls()
	if len(calls) != 1 || calls[0].batch != 8 {
		t.Fatalf("calls %v, want one batch of 8", batchSizes(calls))
	}
	var want []byte
	for _, img := range imgs {
		for _, v := range img {
			want = binary.LittleEndian.AppendUint32(want, math.Float32bits(v))
		}
	}
	if !slices.Equal(calls[0].raw[0], want) {
		t.Fatal("raw_input_contents differ from the little-endian inputs")
	}
	for i := range imgs {
		if err := sliceEq(vecs[i], fakeImageEmbed(imgs[i], cfg.Image.Dims)); err != nil {
			t.Fatalf("vector %d: %v", i, err)
		}
		if cap(vecs[i]) != cfg.Image.Dims {
			t.Errorf("vector %d has cap %d: appending would clobber its neighbour", i, cap(vecs[i]))
		}
	}
}

func TestImageEncoderRejectsWrongTensorSize(t *testing.T) {
	cfg := testConfig()
	c, _ := startFake(t, newFakeTriton(cfg), cfg)
	enc := NewImageEncoder(c)
	defer enc.Close(context.Background())
	_, err := enc.Embed(context.Background(), make([]float32, 10))
	if e := apierr.As(err); e == nil || e.Kind != apierr.InvalidArgument || e.Code != CodeInvalidInput {
		t.Fatalf("got %v, want InvalidArgument", err)
	}
}

// Texts of different lengths share one batch: padded to the longest with
// pad_id, masked, and each result equals the unbatched embedding.
func TestTextEncoderPadsToLongest(t *testing.T) {
	cfg := testConfig()
	cfg.Text.PadID = 3 // not 0, to see it on the wire
	f := newFakeTriton(cfg)
	c, _ := startFake(t, f, cfg)
	enc := NewTextEncoder(c)
	defer enc.Close(context.Background())

	texts := [][]int64{{101, 5, 102}, {101, 9, 8, 7, 6, 102}, {101, 102}}
	vecs, err := enc.EmbedBatch(context.Background(), texts)
	if err != nil {
		t.Fatal(err)
	}
	for i, ids := range texts {
		if err := sliceEq(vecs[i], fakeTextEmbed(ids, cfg.Text.Dims)); err != nil {
			t.Fatalf("text %d: %v", i, err)
		}
	}
	calls := f.inferCalls()
	if len(calls) != 1 {
		t.Fatalf("%d calls, want 1", len(calls))
	}
	l := 0
	for _, ids := range texts {
		l = max(l, len(ids))
	}
	for i, s := range calls[0].shapes {
		if !slices.Equal(s, []int64{int64(len(texts)), int64(l)}) {
			t.Errorf("input %d shape %v, want [%d,%d]", i, s, len(texts), l)
		}
	}
	ids, mask := decodeI64(calls[0].raw[0]), decodeI64(calls[0].raw[1])
	for i, seq := range texts {
		for j := range l {
			wantID, wantMask := cfg.Text.PadID, int64(0)
			if j < len(seq) {
				wantID, wantMask = seq[j], 1
			}
			if ids[i*l+j] != wantID || mask[i*l+j] != wantMask {
				t.Fatalf("text %d pos %d: id %d mask %d, want %d %d", i, j, ids[i*l+j], mask[i*l+j], wantID, wantMask)
			}
		}
	}
}

func TestTextEncoderRejectsBadLengths(t *testing.T) {
	cfg := testConfig()
	c, _ := startFake(t, newFakeTriton(cfg), cfg)
	enc := NewTextEncoder(c)
	defer enc.Close(context.Background())
	for _, n := range []int{0, cfg.Text.MaxSeqLen + 1} {
		if _, err := enc.Embed(context.Background(), make([]int64, n)); apierr.KindOf(err) != apierr.InvalidArgument {
			t.Errorf("%d ids: %v, want InvalidArgument", n, err)
		}
	}
}

// Replies of the wrong size or type are refused, never truncated.
func TestWrongOutputIsRefused(t *testing.T) {
	cfg := testConfig()
	dims := cfg.Image.Dims
	tests := []struct {
		name   string
		mutate func(r *inferencepb.ModelInferResponse)
		want   string
	}{
		{"short raw", func(r *inferencepb.ModelInferResponse) {
			r.RawOutputContents[0] = r.RawOutputContents[0][:len(r.RawOutputContents[0])-4]
		}, "bytes"},
		{"wrong width", func(r *inferencepb.ModelInferResponse) { r.Outputs[0].Shape = []int64{1, int64(dims - 1)} }, "shape"},
		{"wrong batch", func(r *inferencepb.ModelInferResponse) { r.Outputs[0].Shape = []int64{2, int64(dims)} }, "shape"},
		{"fp16", func(r *inferencepb.ModelInferResponse) { r.Outputs[0].Datatype = "FP16" }, "FP16"},
		{"other name", func(r *inferencepb.ModelInferResponse) { r.Outputs[0].Name = "pooler_output" }, "no output"},
		{"no data", func(r *inferencepb.ModelInferResponse) { r.RawOutputContents = nil }, "values"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeTriton(cfg)
			f.inferHook = func(_ context.Context, req *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error) {
				r, err := f.defaultInfer(req)
				if err == nil {
					tt.mutate(r)
				}
				return r, err
			}
			c, _ := startFake(t, f, cfg)
			enc := NewImageEncoder(c)
			defer enc.Close(context.Background())
			_, err := enc.Embed(context.Background(), randomImage(cfg.Image, 1))
			e := apierr.As(err)
			if e == nil || e.Kind != apierr.BadGateway || e.Code != CodeBadResponse || !strings.Contains(e.Message, tt.want) {
				t.Fatalf("got %v, want BadGateway %s mentioning %q", err, CodeBadResponse, tt.want)
			}
		})
	}
}

// Typed fp32_contents instead of raw bytes are accepted (other KServe servers).
func TestTypedContentsFallback(t *testing.T) {
	cfg := testConfig()
	f := newFakeTriton(cfg)
	f.inferHook = func(_ context.Context, req *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error) {
		r, err := f.defaultInfer(req)
		if err != nil {
			return nil, err
		}
		r.Outputs[0].Contents = &inferencepb.InferTensorContents{Fp32Contents: decodeF32(r.RawOutputContents[0])}
		r.RawOutputContents = nil
		return r, nil
	}
	c, _ := startFake(t, f, cfg)
	enc := NewImageEncoder(c)
	defer enc.Close(context.Background())
	img := randomImage(cfg.Image, 4)
	v, err := enc.Embed(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if err := sliceEq(v, fakeImageEmbed(img, cfg.Image.Dims)); err != nil {
		t.Fatal(err)
	}
}

func TestTextEncoderPadToMultiple(t *testing.T) {
	cfg := testConfig()
	cfg.Text.PadToMultiple = 16
	cfg.Text.MaxSeqLen = 20
	f := newFakeTriton(cfg)
	c, _ := startFake(t, f, cfg)
	enc := NewTextEncoder(c)
	defer enc.Close(context.Background())
	for _, tc := range []struct{ longest, want int }{{3, 16}, {16, 16}, {17, 20}} {
		ids := make([]int64, tc.longest)
		for i := range ids {
			ids[i] = int64(200 + i)
		}
		v, err := enc.EmbedBatch(context.Background(), [][]int64{ids, ids[:1]})
		if err != nil {
			t.Fatal(err)
		}
		if err := sliceEq(v[0], fakeTextEmbed(ids, cfg.Text.Dims)); err != nil {
			t.Fatal(err)
		}
		calls := f.inferCalls()
		if got := calls[len(calls)-1].shapes[0]; !slices.Equal(got, []int64{2, int64(tc.want)}) {
			t.Errorf("longest %d: shape %v, want [2,%d]", tc.longest, got, tc.want)
		}
	}
}

// The remaining deadline travels as Triton's "timeout" parameter (int64
// microseconds), never beyond the caller's deadline.
func TestDeadlineParam(t *testing.T) {
	for _, on := range []bool{true, false} {
		cfg := testConfig()
		cfg.DeadlineParam = on
		f := newFakeTriton(cfg)
		c, _ := startFake(t, f, cfg)
		enc := NewTextEncoder(c)
		budget := 3 * time.Second
		ctx, cancel := context.WithTimeout(context.Background(), budget)
		if _, err := enc.Embed(ctx, []int64{101, 102}); err != nil {
			t.Fatal(err)
		}
		cancel()
		enc.Close(context.Background())
		p, ok := f.inferCalls()[0].params["timeout"]
		if ok != on {
			t.Fatalf("deadline_param=%v: timeout parameter present=%v", on, ok)
		}
		if on {
			us := p.GetInt64Param()
			if us <= 0 || us > budget.Microseconds() {
				t.Errorf("timeout parameter %dus, want in (0, %d]", us, budget.Microseconds())
			}
		}
	}
}
