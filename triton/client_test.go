package triton

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/triton/inferencepb"
)

func TestReady(t *testing.T) {
	cfg := testConfig()
	f := newFakeTriton(cfg)
	c, _ := startFake(t, f, cfg)
	if err := c.Ready(context.Background()); err != nil {
		t.Fatalf("Ready: %v", err)
	}

	f.mu.Lock()
	f.models[cfg.Text.Name].ready = false
	f.mu.Unlock()
	err := c.Ready(context.Background())
	if e := apierr.As(err); e == nil || e.Kind != apierr.Unavailable || !strings.Contains(e.Message, cfg.Text.Name) {
		t.Fatalf("model not ready: %v, want Unavailable naming %s", err, cfg.Text.Name)
	}

	f.mu.Lock()
	f.serverReady = false
	f.mu.Unlock()
	if e := apierr.As(c.Ready(context.Background())); e == nil || e.Kind != apierr.Unavailable || e.Code != CodeNotReady {
		t.Fatalf("server not ready: %v", e)
	}
}

func TestCheckModelsMatches(t *testing.T) {
	cfg := testConfig()
	c, _ := startFake(t, newFakeTriton(cfg), cfg)
	if err := c.CheckModels(context.Background()); err != nil {
		t.Fatalf("CheckModels: %v", err)
	}
}

func TestCheckModelsWithoutModelConfigRPC(t *testing.T) {
	cfg := testConfig()
	f := newFakeTriton(cfg)
	f.noModelConfig = true
	f.models[cfg.Image.Name].cfg.MaxBatchSize = 1 // would fail if ModelConfig were read
	c, _ := startFake(t, f, cfg)
	if err := c.CheckModels(context.Background()); err != nil {
		t.Fatalf("CheckModels: %v", err)
	}
}

func TestCheckModelsMismatchMessages(t *testing.T) {
	cfg := testConfig()
	im, tm := cfg.Image, cfg.Text
	tests := []struct {
		name   string
		mutate func(f *fakeTriton)
		want   []string
	}{
		{
			name: "datatype",
			mutate: func(f *fakeTriton) {
				f.models[im.Name].meta.Inputs[0].Datatype = "FP16"
			},
			want: []string{`clip_image: input "pixel_values": config says FP32 [-1,3,224,224], server has FP16 [-1,3,224,224]`},
		},
		{
			name: "shape",
			mutate: func(f *fakeTriton) {
				f.models[im.Name].meta.Outputs[0].Shape = []int64{-1, 768}
			},
			want: []string{`clip_image: output "image_embeds": config says FP32 [-1,512], server has FP32 [-1,768]`},
		},
		{
			name: "renamed input and fixed sequence length",
			mutate: func(f *fakeTriton) {
				f.models[tm.Name].meta.Inputs[0].Name = "ids"
				f.models[tm.Name].meta.Inputs[1].Shape = []int64{-1, 128}
			},
			want: []string{
				`clip_text: input "input_ids": config says INT64 [-1,-1], server has no such input (server inputs: "ids" INT64 [-1,-1], "attention_mask" INT64 [-1,128])`,
				`clip_text: input "attention_mask": config says INT64 [-1,-1], server has INT64 [-1,128]`,
				`clip_text: input "ids" (INT64 [-1,-1]) is required by the server but not sent by tusou`,
			},
		},
		{
			name: "max batch size",
			mutate: func(f *fakeTriton) {
				f.models[im.Name].cfg.MaxBatchSize = 8
			},
			want: []string{fmt.Sprintf("clip_image: server max_batch_size 8 < batcher.max_batch_size %d: larger batches would be refused", cfg.Image.Batcher.MaxBatchSize)},
		},
		{
			name: "unknown model",
			mutate: func(f *fakeTriton) {
				f.models["other_model"] = f.models[im.Name]
				delete(f.models, im.Name)
			},
			want: []string{`clip_image: model "clip_image" version 1 not found on Triton at passthrough:///bufnet (server has: clip_text, other_model)`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeTriton(cfg)
			tt.mutate(f)
			c, _ := startFake(t, f, cfg)
			err := c.CheckModels(context.Background())
			e := apierr.As(err)
			if e == nil || e.Code != CodeModelMismatch {
				t.Fatalf("got %v, want %s", err, CodeModelMismatch)
			}
			lines := strings.Split(e.Err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("got %d problems:\n%s\nwant:\n%s", len(lines), e.Err, strings.Join(tt.want, "\n"))
			}
			for i := range lines {
				if lines[i] != tt.want[i] {
					t.Errorf("problem %d:\n got: %s\nwant: %s", i, lines[i], tt.want[i])
				}
			}
		})
	}
}

func TestInferRetriesConnectionErrors(t *testing.T) {
	cfg := testConfig()
	f := newFakeTriton(cfg)
	var calls atomic.Int32
	f.inferHook = func(ctx context.Context, req *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error) {
		if calls.Add(1) == 1 {
			return nil, status.Error(codes.Unavailable, "error reading from server: EOF")
		}
		return f.defaultInfer(req)
	}
	c, reg := startFake(t, f, cfg)
	enc := NewTextEncoder(c)
	defer enc.Close(context.Background())
	ids := []int64{101, 7, 102}
	got, err := enc.Embed(context.Background(), ids)
	if err != nil {
		t.Fatalf("Embed: %v", err)
	}
	if err := sliceEq(got, fakeTextEmbed(ids, cfg.Text.Dims)); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d calls, want 2", n)
	}
	if r := metricValue(t, reg, "tusou_triton_retries_total", map[string]string{"model": cfg.Text.Label()}); r != 1 {
		t.Errorf("retries %v, want 1", r)
	}
}

func TestInferErrorMapping(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		sleep     bool // answer only after the deadline
		kind      apierr.Kind
		code      string
		calls     int32
		wantRetry bool // RetryAfter set
	}{
		{"queue full", status.Error(codes.Unavailable, "Exceeds maximum queue size"), false, apierr.Overloaded, CodeOverloaded, 1, true},
		// The caller still has 30s: Triton shed the request under its own
		// queue policy.
		{"server queue timeout", status.Error(codes.Unavailable, "Request timeout expired"), false, apierr.Overloaded, CodeOverloaded, 1, true},
		{"unknown model", status.Error(codes.Unavailable, "Request for unknown model: 'clip_text' is not found"), false, apierr.Unavailable, CodeModelNotFound, 1, true},
		{"not found code", status.Error(codes.NotFound, "no such model"), false, apierr.Unavailable, CodeModelNotFound, 1, true},
		{"bad shape", status.Error(codes.InvalidArgument, "unexpected shape for input 'input_ids'"), false, apierr.BadGateway, CodeUpstreamError, 1, false},
		{"model crashed", status.Error(codes.Internal, "Failed to process the request(s) for model instance"), false, apierr.BadGateway, CodeUpstreamError, 1, false},
		{"connection lost every time", status.Error(codes.Unavailable, "connection error: desc = \"transport: Error while dialing\""), false, apierr.Unavailable, CodeUnavailable, 3, true},
		{"deadline", nil, true, apierr.Timeout, CodeTimeout, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			f := newFakeTriton(cfg)
			var calls atomic.Int32
			f.inferHook = func(ctx context.Context, _ *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error) {
				calls.Add(1)
				if tt.sleep {
					<-ctx.Done()
					return nil, status.FromContextError(ctx.Err()).Err()
				}
				return nil, tt.err
			}
			c, reg := startFake(t, f, cfg)
			enc := NewTextEncoder(c)
			defer enc.Close(context.Background())
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if tt.sleep {
				cancel()
				ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
			}
			defer cancel()
			_, err := enc.Embed(ctx, []int64{101, 102})
			e := apierr.As(err)
			if e == nil || e.Kind != tt.kind || e.Code != tt.code {
				t.Fatalf("got %v (%#v), want kind %v code %s", err, e, tt.kind, tt.code)
			}
			if (e.RetryAfter > 0) != tt.wantRetry {
				t.Errorf("RetryAfter %v, want set=%v", e.RetryAfter, tt.wantRetry)
			}
			if got := calls.Load(); got != tt.calls {
				t.Errorf("%d ModelInfer calls, want %d", got, tt.calls)
			}
			// The caller may return (its own deadline) before the batch
			// goroutine has counted the failure.
			waitFor(t, "errors_total{kind="+tt.kind.String()+"} = 1", func() bool {
				return metricValue(t, reg, "tusou_triton_errors_total", map[string]string{"kind": tt.kind.String()}) == 1
			})
		})
	}
}

// The deadline a caller sets reaches Triton as the gRPC deadline.
func TestDeadlinePropagatesToServer(t *testing.T) {
	cfg := testConfig()
	f := newFakeTriton(cfg)
	c, _ := startFake(t, f, cfg)
	enc := NewImageEncoder(c)
	defer enc.Close(context.Background())
	deadline := time.Now().Add(time.Minute) // later than request_timeout (10s)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if _, err := enc.Embed(ctx, randomImage(cfg.Image, 1)); err != nil {
		t.Fatal(err)
	}
	soon := time.Now().Add(2 * time.Second)
	ctx2, cancel2 := context.WithDeadline(context.Background(), soon)
	defer cancel2()
	if _, err := enc.Embed(ctx2, randomImage(cfg.Image, 2)); err != nil {
		t.Fatal(err)
	}
	calls := f.inferCalls()
	if len(calls) != 2 || calls[0].deadline.IsZero() || calls[1].deadline.IsZero() {
		t.Fatalf("calls %+v, want 2 with deadlines", calls)
	}
	sent := f.sentDeadlines()
	// First call: request_timeout (10s) is sooner than the caller's minute.
	if d := sent[0]; d.IsZero() || !d.Before(deadline) || d.After(time.Now().Add(cfg.RequestTimeout)) {
		t.Errorf("first call deadline %v, want request_timeout from the call", d)
	}
	// Second call: the caller's deadline is sooner and is sent as is.
	if d := sent[1]; !d.Equal(soon) {
		t.Errorf("second call deadline %v, want %v", d, soon)
	}
}

// A port nobody listens on: Unavailable after max_attempts tries, with the
// retries counted.
func TestUnreachableServer(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	cfg := DefaultConfig()
	cfg.GRPCAddr = addr
	cfg.Retry.InitialBackoff = time.Millisecond
	cfg.Retry.MaxBackoff = 2 * time.Millisecond
	reg := prometheus.NewRegistry()
	c, err := Dial(context.Background(), cfg, zaptest.NewLogger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if e := apierr.As(c.Ready(ctx)); e == nil || e.Kind != apierr.Unavailable || e.RetryAfter <= 0 {
		t.Fatalf("Ready: %v, want Unavailable with RetryAfter", e)
	}
	enc := NewTextEncoder(c)
	defer enc.Close(context.Background())
	_, err = enc.Embed(ctx, []int64{1, 2})
	if e := apierr.As(err); e == nil || e.Kind != apierr.Unavailable || e.Code != CodeUnavailable {
		t.Fatalf("Embed: %v, want Unavailable %s", err, CodeUnavailable)
	}
	if r := metricValue(t, reg, "tusou_triton_retries_total", nil); r != float64(cfg.Retry.MaxAttempts-1) {
		t.Errorf("retries %v, want %d", r, cfg.Retry.MaxAttempts-1)
	}
}

func TestMapErrorCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e, retry := mapError(ctx, "m", status.Error(codes.Canceled, "context canceled"), time.Second)
	if e.Kind != apierr.Canceled || retry {
		t.Errorf("caller canceled: %v retry=%v", e, retry)
	}
	// Canceled with a live caller context: the connection was closed under us.
	e, _ = mapError(context.Background(), "m", status.Error(codes.Canceled, "grpc: the client connection is closing"), time.Second)
	if e.Kind != apierr.Unavailable {
		t.Errorf("connection closing: %v", e)
	}
	e, _ = mapError(context.Background(), "m", status.Error(codes.ResourceExhausted, "grpc: received message larger than max (5 vs. 4)"), time.Second)
	if e.Kind != apierr.BadGateway || e.Code != CodeMessageTooLarge {
		t.Errorf("message too large: %v", e)
	}
	// Triton's queue timeout when the caller's own deadline is what expired.
	soon, cancelSoon := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancelSoon()
	e, _ = mapError(soon, "m", status.Error(codes.Unavailable, "Request timeout expired"), time.Second)
	if e.Kind != apierr.Timeout {
		t.Errorf("queue timeout at the caller's deadline: %v", e)
	}
	e, _ = mapError(context.Background(), "m", context.DeadlineExceeded, time.Second)
	if e.Kind != apierr.Timeout {
		t.Errorf("deadline: %v", e)
	}
	// The dial error text for ETIMEDOUT must not look like Triton's queue timeout.
	e, retry = mapError(context.Background(), "m", status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 10.0.0.1:8001: connect: connection timed out"`), time.Second)
	if e.Code != CodeUnavailable || !retry {
		t.Errorf("dial timeout: %v retry=%v", e, retry)
	}
	if e := apierr.As(errors.Unwrap(e)); e != nil {
		t.Errorf("cause should be the gRPC status, got apierr %v", e)
	}
}
