package tune

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/triton"
)

func res(batch, conc int, tp float64, p99 time.Duration) Result {
	return Result{Setting: Setting{MaxBatch: batch, MaxDelay: 2 * time.Millisecond, MaxInflight: 2, Concurrency: conc},
		OK: 1000, Throughput: tp, P50: p99 / 2, P99: p99, GatewayBatch: float64(batch)}
}

func TestBestPicksFastestWithinTarget(t *testing.T) {
	rs := []Result{
		res(1, 8, 100, 20*time.Millisecond),
		res(8, 8, 300, 45*time.Millisecond),   // the answer
		res(32, 8, 500, 80*time.Millisecond),  // faster, but over the target
		res(16, 8, 400, 30*time.Millisecond),  // faster, but refuses
		res(16, 32, 450, 40*time.Millisecond), // faster, but one call failed
	}
	rs[3].Refused = 50
	rs[4].Failed = 1
	if got := Best(rs, 50*time.Millisecond); got != 1 {
		t.Fatalf("Best = %d, want 1", got)
	}
	// A refusal rate under 0.1% still qualifies.
	rs[3].Refused = 1
	if got := Best(rs, 50*time.Millisecond); got != 3 {
		t.Fatalf("Best with one refusal in 1001 = %d, want 3", got)
	}
	if got := Best(rs, time.Millisecond); got != -1 {
		t.Fatalf("Best under an impossible target = %d, want -1", got)
	}
}

func TestRecommendConsistency(t *testing.T) {
	base := triton.BatcherConfig{MaxBatchSize: 64, MaxDelay: 2 * time.Millisecond, QueueSize: 256, MaxInflight: 4}
	limits := ModelLimits{MaxBatchSize: 128, PreferredBatch: []int{64, 128}, MaxQueueSize: 128, Instances: 2, Dynamic: true}

	best := res(32, 512, 900, 40*time.Millisecond)
	best.MaxInflight = 4
	r := Recommend(best, limits, 4, base)
	if r.Batcher.QueueSize != 512 {
		t.Errorf("queue_size %d, want 512 (the measured concurrency must fit)", r.Batcher.QueueSize)
	}
	for _, want := range []string{"max_batch_size: 32", "max_delay: 2ms", "max_inflight: 4", "queue_size: 512"} {
		if !strings.Contains(r.GatewayYAML, want) {
			t.Errorf("gateway YAML lacks %q:\n%s", want, r.GatewayYAML)
		}
	}
	if len(r.Pbtxt) != 0 {
		t.Errorf("no config.pbtxt change expected, got %v", r.Pbtxt)
	}
	for _, c := range r.Checks {
		if !c.OK {
			t.Errorf("unexpected failed check: %s", c.Message)
		}
	}

	// 100 pods x 4 in flight = 400 requests > Triton's queue of 128 + 2;
	// a gateway batch of 256 > Triton's 128.
	best = res(256, 64, 900, 40*time.Millisecond)
	best.MaxInflight = 4
	r = Recommend(best, limits, 100, base)
	pb := strings.Join(r.Pbtxt, "\n")
	for _, want := range []string{"max_batch_size: 256", "max_queue_size: 400"} {
		if !strings.Contains(pb, want) {
			t.Errorf("config.pbtxt changes lack %q: %v", want, r.Pbtxt)
		}
	}
	failed := 0
	for _, c := range r.Checks {
		if !c.OK {
			failed++
		}
	}
	if failed != 2 {
		t.Errorf("%d failed checks, want 2: %+v", failed, r.Checks)
	}

	// One pod with one batch of 4 in flight can never fill Triton's
	// preferred batch of 64, and too few requests keep 2 instances busy.
	best = res(4, 8, 90, 40*time.Millisecond)
	best.MaxInflight = 1
	r = Recommend(best, limits, 1, base)
	if !strings.Contains(strings.Join(r.Pbtxt, "\n"), "preferred_batch_size: [ 4 ]") {
		t.Errorf("expected a preferred_batch_size change, got %v", r.Pbtxt)
	}
	if r.Batcher.QueueSize != 256 {
		t.Errorf("queue_size %d, want the configured 256 kept", r.Batcher.QueueSize)
	}
}

func TestSweepAndTiming(t *testing.T) {
	o := Options{BatchSizes: []int{1, 64, 256}, Delays: []time.Duration{time.Millisecond, 5 * time.Millisecond},
		Inflight: []int{2}, Concurrency: []int{8, 32}}
	s, skipped := o.Sweep(128)
	if len(s) != 2*2*2 || len(skipped) != 1 || skipped[0] != 256 {
		t.Fatalf("sweep %d settings, skipped %v", len(s), skipped)
	}
	for _, x := range s {
		if x.MaxBatch > 128 {
			t.Errorf("setting above Triton's max_batch_size: %s", x)
		}
	}
	step, warm, err := Timing(2*time.Minute, 8, true)
	if err != nil || step+warm != 2*time.Minute/9 || warm > 2*time.Second {
		t.Fatalf("Timing: step %s warm-up %s err %v", step, warm, err)
	}
	if _, _, err := Timing(5*time.Second, 8, true); err == nil || !strings.Contains(err.Error(), "--budget") {
		t.Fatalf("a 5s budget for 9 steps should be refused naming --budget, got %v", err)
	}
	bad := Options{Target: 0, Budget: time.Minute, Pods: 0, Concurrency: []int{1000}, MaxConcurrency: 256}
	err = bad.Validate()
	for _, flag := range []string{"--p99", "--pods", "--max-concurrency"} {
		if err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("Validate should name %s: %v", flag, err)
		}
	}
}

// fakePipeline refuses every third call and counts batches of 4.
type fakePipeline struct {
	mu     sync.Mutex
	calls  int
	closed bool
}

func (f *fakePipeline) Embed(ctx context.Context, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls%3 == 0 {
		return apierr.New(apierr.Overloaded, "queue_full", "full")
	}
	if string(data) == "bad" {
		return errors.New("boom")
	}
	return nil
}

func (f *fakePipeline) BatchStats() (float64, float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return float64(f.calls) / 4, float64(f.calls)
}

func (f *fakePipeline) Close(context.Context) error { f.closed = true; return nil }

// fakeMetrics advances Triton's counters by 10 requests of 3 items in 2
// executions per snapshot.
type fakeMetrics struct{ n float64 }

func (m *fakeMetrics) Snapshot(context.Context) (TritonSnapshot, error) {
	m.n++
	return TritonSnapshot{Requests: 10 * m.n, Inferences: 30 * m.n, Executions: 2 * m.n,
		QueueUS: 5000 * m.n, ComputeUS: 8000 * m.n, GPUUtil: math.NaN()}, nil
}

func TestRunnerMeasuresOneStep(t *testing.T) {
	var pipelines []*fakePipeline
	r := &Runner{
		Factory: func(ctx context.Context, s Setting) (Pipeline, error) {
			p := &fakePipeline{}
			pipelines = append(pipelines, p)
			return p, nil
		},
		Metrics: &fakeMetrics{},
		Images:  [][]byte{[]byte("a"), []byte("b")},
	}
	var progressed []Result
	r.Progress = func(x Result) { progressed = append(progressed, x) }
	plan := Plan{Settings: []Setting{{MaxBatch: 4, MaxDelay: time.Millisecond, MaxInflight: 1, Concurrency: 3}},
		Step: 30 * time.Millisecond, Warmup: 10 * time.Millisecond}
	out, err := r.Run(context.Background(), plan)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || len(progressed) != 1 || len(pipelines) != 1 || !pipelines[0].closed {
		t.Fatalf("results %d, progress %d, pipelines %d (closed: %v)", len(out), len(progressed), len(pipelines), pipelines[0].closed)
	}
	x := out[0]
	if x.OK == 0 || x.Refused == 0 || x.Failed != 0 {
		t.Fatalf("ok %d refused %d failed %d: the fake refuses every third call", x.OK, x.Refused, x.Failed)
	}
	if x.GatewayBatch != 4 {
		t.Errorf("gateway batch %v, want 4", x.GatewayBatch)
	}
	d := x.Triton
	if !d.Valid || d.Batch != 15 || d.QueuePerRequest != 500*time.Microsecond || d.ComputePerExec != 4*time.Millisecond {
		t.Errorf("Triton delta %+v: want batch 15 (30 items / 2 executions), queue 500µs, compute 4ms", d)
	}
	if x.P99 < x.P50 || x.Throughput <= 0 {
		t.Errorf("p50 %s p99 %s throughput %v", x.P50, x.P99, x.Throughput)
	}
}

func TestRunnerCountsFailures(t *testing.T) {
	r := &Runner{
		Factory: func(ctx context.Context, s Setting) (Pipeline, error) { return &fakePipeline{}, nil },
		Images:  [][]byte{[]byte("bad")},
	}
	x, err := r.Step(context.Background(), Setting{MaxBatch: 1, MaxDelay: time.Millisecond, MaxInflight: 1, Concurrency: 2},
		Plan{Step: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if x.Failed == 0 || x.OK != 0 || x.Triton.Valid {
		t.Fatalf("failed %d ok %d triton %+v", x.Failed, x.OK, x.Triton)
	}
	if _, err := (&Runner{}).Run(context.Background(), Plan{}); err == nil {
		t.Fatal("a runner without images should refuse to run")
	}
}

func TestPacerCapsRate(t *testing.T) {
	// 1000/s over 2 callers during 20ms: at most ~21 slots whatever the
	// callers' speed (the count is bounded by the schedule, not timing).
	r := &Runner{
		Factory: func(ctx context.Context, s Setting) (Pipeline, error) { return &fakePipeline{}, nil },
		Images:  [][]byte{[]byte("a")},
	}
	x, err := r.Step(context.Background(), Setting{MaxBatch: 1, MaxDelay: time.Millisecond, MaxInflight: 1, Concurrency: 2},
		Plan{Step: 20 * time.Millisecond, MaxRate: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if n := x.OK + x.Refused; n == 0 || n > 21 {
		t.Fatalf("%d calls in 20ms at 1000/s", n)
	}
}

// tritonText is a fragment of a real Triton 2.51 /metrics page.
const tritonText = `# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="clip_text",version="1"} 7
nv_inference_request_success{model="clip_image",version="1"} 40
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="clip_image",reason="REJECTED",version="1"} 2
nv_inference_request_failure{model="clip_image",reason="BACKEND",version="1"} 1
# HELP nv_inference_count Number of inferences performed (does not include cached requests)
# TYPE nv_inference_count counter
nv_inference_count{model="clip_image",version="1"} 160
# HELP nv_inference_exec_count Number of model executions performed (does not include cached requests)
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="clip_image",version="1"} 20
# HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds (includes cached requests)
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="clip_image",version="1"} 4000
# HELP nv_inference_compute_infer_duration_us Cumulative compute inference duration in microseconds (does not include cached requests)
# TYPE nv_inference_compute_infer_duration_us counter
nv_inference_compute_infer_duration_us{model="clip_image",version="1"} 100000
# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-a"} 0.5
nv_gpu_utilization{gpu_uuid="GPU-b"} 0.7
`

func TestSnapshotFromTritonMetrics(t *testing.T) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(tritonText))
	if err != nil {
		t.Fatal(err)
	}
	s, err := snapshotFrom(mfs, "clip_image")
	if err != nil {
		t.Fatal(err)
	}
	if s.Requests != 40 || s.Failures != 3 || s.Inferences != 160 || s.Executions != 20 || math.Abs(s.GPUUtil-0.6) > 1e-9 {
		t.Fatalf("snapshot %+v", s)
	}
	d := s.Sub(TritonSnapshot{})
	if d.Batch != 8 || d.QueuePerRequest != 100*time.Microsecond || d.ComputePerExec != 5*time.Millisecond {
		t.Fatalf("delta %+v", d)
	}
	if _, err := snapshotFrom(mfs, "clip_video"); err == nil || !strings.Contains(err.Error(), "clip_video") {
		t.Fatalf("an unknown model should be an error naming it, got %v", err)
	}
}

func TestReportOutputs(t *testing.T) {
	rs := []Result{res(1, 8, 100, 20*time.Millisecond), res(8, 8, 300, 45*time.Millisecond), res(8, 32, 350, 90*time.Millisecond)}
	rs[1].Triton = TritonDelta{Valid: true, Executions: 10, Batch: 12, QueuePerRequest: time.Millisecond, ComputePerExec: 3 * time.Millisecond, GPUUtil: math.NaN()}
	best := Best(rs, 50*time.Millisecond)
	rec := Recommend(rs[best], ModelLimits{MaxBatchSize: 128, Instances: 1}, 1, triton.BatcherConfig{QueueSize: 256})
	v := rs[best]
	v.Throughput = 290
	s := Summary{Target: 50 * time.Millisecond, Pods: 1, Images: 3, Model: "clip_image", Results: rs, Best: best, Rec: &rec, Verify: &v}

	var table bytes.Buffer
	WriteTable(&table, rs, best)
	lines := strings.Split(strings.TrimSpace(table.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(strings.TrimSpace(lines[2]), "*") || !strings.Contains(lines[2], "12.0") {
		t.Fatalf("table:\n%s", table.String())
	}
	var md bytes.Buffer
	s.WriteMarkdown(&md, "plot.svg")
	for _, want := range []string{"**best**", "max_batch_size: 8", "97% of the prediction", "![throughput and p99 vs batch size](plot.svg)", "no change needed"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
	if r := s.VerifyRatio(); math.Abs(r-290.0/300) > 1e-9 {
		t.Errorf("verify ratio %v", r)
	}

	svg := PlotSVG(rs, 50*time.Millisecond)
	dec := xml.NewDecoder(bytes.NewReader(svg))
	paths := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("plot is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "path" {
			paths++
		}
	}
	// Axes + two series (conc 8, conc 32) x (throughput, p99).
	if paths != 1+2*2 {
		t.Errorf("%d paths in the plot, want 5", paths)
	}

	none := Summary{Target: time.Millisecond, Results: rs, Best: -1}
	var out bytes.Buffer
	none.WriteText(&out)
	if !strings.Contains(out.String(), "No setting met") {
		t.Errorf("no-result text: %s", out.String())
	}
}
