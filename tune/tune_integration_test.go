//go:build integration

package tune

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/internal/testutil"
)

// TestTuneOnTheLocalStack runs `tusou tune` with a tiny budget against the
// real Triton (make up): the sweep, Triton's metrics, the recommendation,
// the verify step and the report files. The target is loose because the
// local Triton runs on a shared CPU; what is asserted is that every part
// measured something real.
func TestTuneOnTheLocalStack(t *testing.T) {
	cfg := config.Default()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	o := Options{
		Images:      filepath.Join(testutil.Root(), DefaultImages),
		Target:      time.Minute,
		Budget:      12 * time.Second,
		BatchSizes:  []int{1, 4},
		Delays:      []time.Duration{2 * time.Millisecond},
		Inflight:    []int{2},
		Concurrency: []int{2},
		MaxRate:     0, MaxConcurrency: 256, Pods: 1, Out: out, Verify: true,
	}
	var stdout bytes.Buffer
	if err := Main(context.Background(), cfg, o, &stdout, zap.NewNop()); err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	text := stdout.String()
	t.Log("\n" + text)
	for _, want := range []string{"Triton batch", "Best throughput with p99 <= 1m0s", "Verify (same setting, measured again)",
		"max_batch_size: ", "ok   gateway max_batch_size"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, f := range []string{"report.md", "plot.svg"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s not written: %v", f, err)
		}
	}
}

// TestStepReadsTritonCounters: one step through the real pipeline moves
// Triton's own counters by at least the images the step embedded (other
// tests may share the Triton, so at least, not exactly).
func TestStepReadsTritonCounters(t *testing.T) {
	cfg := config.Default()
	factory, err := NewPipelineFactory(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(filepath.Join(testutil.Root(), DefaultImages, "chelsea.png"))
	if err != nil {
		t.Fatal(err)
	}
	r := &Runner{Factory: factory, Images: [][]byte{img},
		Metrics: &HTTPMetrics{URL: "http://127.0.0.1:8002/metrics", Model: cfg.Triton.Image.Name}}
	x, err := r.Step(context.Background(), Setting{MaxBatch: 4, MaxDelay: 20 * time.Millisecond, MaxInflight: 1, Concurrency: 4},
		Plan{Step: 2 * time.Second, Warmup: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: ok %d, gateway batch %.1f, Triton %+v", x.Setting, x.OK, x.GatewayBatch, x.Triton)
	if x.OK == 0 || x.Failed != 0 {
		t.Fatalf("ok %d failed %d", x.OK, x.Failed)
	}
	if !x.Triton.Valid || x.Triton.Inferences < float64(x.OK) || x.Triton.Executions == 0 {
		t.Fatalf("Triton counted %v inferences in %v executions for %d embedded images", x.Triton.Inferences, x.Triton.Executions, x.OK)
	}
	if x.GatewayBatch < 1 || x.GatewayBatch > 4 {
		t.Fatalf("gateway batch %v outside 1..4", x.GatewayBatch)
	}
}
