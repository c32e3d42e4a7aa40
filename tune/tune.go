package tune

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/triton"
)

// Options are the command's flags.
type Options struct {
	Images         string        // folder of representative images
	TritonMetrics  string        // Triton's metrics URL; default from triton.grpc_addr's host, port 8002
	Target         time.Duration // p99 target
	Budget         time.Duration // whole run, verify included
	BatchSizes     []int
	Delays         []time.Duration
	Inflight       []int
	Concurrency    []int
	MaxRate        float64 // offered images/s cap over all callers (0: none)
	MaxConcurrency int     // refuse loads above this (production safety)
	Pods           int     // gateway replicas the recommendation is for
	Out            string  // report folder
	Verify         bool
}

// DefaultImages is the committed fixture folder, relative to the repository
// root (the command also looks for it from the working directory up).
const DefaultImages = "model_repository/testdata/images"

// Register defines the flags on fs with their defaults.
func (o *Options) Register(fs *flag.FlagSet) {
	fs.StringVar(&o.Images, "images", DefaultImages, "folder of representative images (every regular file in it)")
	fs.StringVar(&o.TritonMetrics, "triton-metrics", "", "Triton's Prometheus endpoint (default: http://<triton.grpc_addr host>:8002/metrics)")
	fs.DurationVar(&o.Target, "p99", 50*time.Millisecond, "latency target: the best setting is the fastest whose p99 is at most this")
	fs.DurationVar(&o.Budget, "budget", 2*time.Minute, "total time for the sweep and the verify step")
	o.BatchSizes, o.Inflight, o.Concurrency = []int{1, 4, 16, 64}, []int{2}, []int{8, 32}
	o.Delays = []time.Duration{2 * time.Millisecond}
	fs.Func("batch-sizes", "gateway max_batch_size values to try (default 1,4,16,64; capped at Triton's max_batch_size)", intList(&o.BatchSizes))
	fs.Func("delays", "gateway max_delay values to try (default 2ms)", durationList(&o.Delays))
	fs.Func("inflight", "gateway max_inflight values to try (default 2)", intList(&o.Inflight))
	fs.Func("concurrency", "offered loads: concurrent callers, one image each (default 8,32)", intList(&o.Concurrency))
	fs.Float64Var(&o.MaxRate, "max-rate", 0, "cap on offered images/s over all callers, for runs against a production Triton (0: no cap)")
	fs.IntVar(&o.MaxConcurrency, "max-concurrency", 256, "refuse to offer more concurrent callers than this")
	fs.IntVar(&o.Pods, "pods", 1, "gateway replicas sharing the Triton (for the queue-size checks)")
	fs.StringVar(&o.Out, "out", "tune-report", "folder for report.md and plot.svg")
	fs.BoolVar(&o.Verify, "verify", true, "measure the best setting again at the end and compare with the prediction")
}

func intList(dst *[]int) func(string) error {
	return func(s string) error {
		var out []int
		for _, f := range strings.Split(s, ",") {
			v, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || v <= 0 {
				return fmt.Errorf("want positive integers separated by commas, got %q", s)
			}
			out = append(out, v)
		}
		*dst = out
		return nil
	}
}

func durationList(dst *[]time.Duration) func(string) error {
	return func(s string) error {
		var out []time.Duration
		for _, f := range strings.Split(s, ",") {
			v, err := time.ParseDuration(strings.TrimSpace(f))
			if err != nil || v <= 0 {
				return fmt.Errorf("want durations separated by commas (e.g. 1ms,5ms), got %q", s)
			}
			out = append(out, v)
		}
		*dst = out
		return nil
	}
}

// Validate checks the options, naming the flag at fault.
func (o Options) Validate() error {
	var errs []error
	if o.Target <= 0 {
		errs = append(errs, errors.New("--p99 must be positive"))
	}
	if o.Budget <= 0 {
		errs = append(errs, errors.New("--budget must be positive"))
	}
	if o.Pods < 1 {
		errs = append(errs, errors.New("--pods must be at least 1"))
	}
	if o.MaxRate < 0 {
		errs = append(errs, errors.New("--max-rate must not be negative"))
	}
	for _, c := range o.Concurrency {
		if c > o.MaxConcurrency {
			errs = append(errs, fmt.Errorf("--concurrency %d is above --max-concurrency %d", c, o.MaxConcurrency))
		}
	}
	return errors.Join(errs...)
}

// Sweep lists the settings to measure: every combination, batch sizes
// above Triton's max_batch_size left out (Triton would reject them).
func (o Options) Sweep(tritonMax int) (settings []Setting, skipped []int) {
	for _, b := range o.BatchSizes {
		if tritonMax > 0 && b > tritonMax {
			skipped = append(skipped, b)
			continue
		}
		for _, d := range o.Delays {
			for _, f := range o.Inflight {
				for _, c := range o.Concurrency {
					settings = append(settings, Setting{MaxBatch: b, MaxDelay: d, MaxInflight: f, Concurrency: c})
				}
			}
		}
	}
	return settings, skipped
}

// Timing splits the budget over n steps (plus one for verify): each step
// gets a warm-up of a fifth (at most 2s) and the rest measured.
func Timing(budget time.Duration, n int, verify bool) (step, warmup time.Duration, err error) {
	slots := n
	if verify {
		slots++
	}
	if slots == 0 {
		return 0, 0, errors.New("nothing to sweep")
	}
	per := budget / time.Duration(slots)
	warmup = min(per/5, 2*time.Second)
	step = per - warmup
	if step < time.Second {
		return 0, 0, fmt.Errorf("--budget %s is too short for %d steps (each needs over 1s measured); raise it or sweep fewer values", budget, slots)
	}
	return step, warmup, nil
}

// Main runs `tusou tune`: load the images, read Triton's model limits,
// sweep, verify, print the table and recommendation to stdout and write the
// report.
func Main(ctx context.Context, cfg *config.Config, o Options, stdout io.Writer, log *zap.Logger) error {
	if err := o.Validate(); err != nil {
		return err
	}
	started := time.Now()
	ctx, cancel := context.WithTimeout(ctx, o.Budget+time.Minute) // hard stop: budget plus set-up
	defer cancel()
	if o.TritonMetrics == "" {
		host, _, err := net.SplitHostPort(cfg.Triton.GRPCAddr)
		if err != nil {
			return fmt.Errorf("--triton-metrics: cannot derive it from triton.grpc_addr %q: %w", cfg.Triton.GRPCAddr, err)
		}
		o.TritonMetrics = "http://" + net.JoinHostPort(host, "8002") + "/metrics"
	}
	factory, err := NewPipelineFactory(cfg, log)
	if err != nil {
		return err
	}
	client, err := triton.Dial(ctx, cfg.Triton, log, nil)
	if err != nil {
		return err
	}
	defer client.Close()
	if err := client.WaitReady(ctx, 500*time.Millisecond); err != nil {
		return fmt.Errorf("triton at %s: %w", cfg.Triton.GRPCAddr, err)
	}
	model := cfg.Triton.Image.Name
	limits, err := ReadModelLimits(ctx, client.RPC(), model, cfg.Triton.Image.Version)
	if err != nil {
		return err
	}
	settings, skipped := o.Sweep(limits.MaxBatchSize)
	step, warmup, err := Timing(o.Budget, len(settings), o.Verify)
	if err != nil {
		return err
	}
	images, dropped, err := loadImages(ctx, ResolveImages(o.Images), factory)
	if err != nil {
		return err
	}
	metrics := &HTTPMetrics{URL: o.TritonMetrics, Model: model}
	if _, err := metrics.Snapshot(ctx); err != nil {
		return fmt.Errorf("--triton-metrics: %w", err)
	}

	fmt.Fprintf(stdout, "tusou tune: %s at %s (max_batch_size %d, %d instance(s)), %d images, %d settings x (%s + %s warm-up)",
		model, cfg.Triton.GRPCAddr, limits.MaxBatchSize, limits.Instances, len(images), len(settings), step, warmup)
	if o.MaxRate > 0 {
		fmt.Fprintf(stdout, ", offered load capped at %.0f img/s", o.MaxRate)
	}
	fmt.Fprintln(stdout)
	var notes []string
	if len(skipped) > 0 {
		notes = append(notes, fmt.Sprintf("Batch sizes %v skipped: above Triton's max_batch_size %d.", skipped, limits.MaxBatchSize))
	}
	if len(dropped) > 0 {
		notes = append(notes, fmt.Sprintf("Images refused by the gateway's checks and left out: %s.", strings.Join(dropped, ", ")))
	}
	for _, n := range notes {
		fmt.Fprintln(stdout, n)
	}
	plan := Plan{Settings: settings, Step: step, Warmup: warmup, MaxRate: o.MaxRate}
	runner := &Runner{Factory: factory, Metrics: metrics, Images: images,
		Progress: func(r Result) {
			fmt.Fprintf(stdout, "  %s: %.1f img/s, p99 %s ms\n", r.Setting, r.Throughput, ms(r.P99))
		}}
	results, err := runner.Run(ctx, plan)
	if err != nil {
		return err
	}
	sum := Summary{Target: o.Target, Pods: o.Pods, Images: len(images), Model: model, Limits: limits,
		Results: results, Best: Best(results, o.Target), Started: started, Notes: notes}
	if sum.Best >= 0 {
		rec := Recommend(results[sum.Best], limits, o.Pods, cfg.Triton.Image.Batcher)
		sum.Rec = &rec
		if o.Verify {
			v, err := runner.Step(ctx, results[sum.Best].Setting, plan)
			if err != nil {
				return fmt.Errorf("verify: %w", err)
			}
			sum.Verify = &v
		}
	}
	sum.Duration = time.Since(started)
	fmt.Fprintln(stdout)
	WriteTable(stdout, results, sum.Best)
	sum.WriteText(stdout)
	if err := writeReport(o.Out, sum); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nReport: %s, %s\n", filepath.Join(o.Out, "report.md"), filepath.Join(o.Out, "plot.svg"))
	if r := sum.VerifyRatio(); !math.IsNaN(r) && math.Abs(r-1) > 0.15 {
		fmt.Fprintf(stdout, "Warning: the verify run differs from the prediction by %.0f%% (> 15%%): the machine or Triton was busy with other work; rerun with a larger --budget.\n", 100*(r-1))
	}
	return nil
}

func writeReport(dir string, s Summary) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "report.md"))
	if err != nil {
		return err
	}
	s.WriteMarkdown(f, "plot.svg")
	if err := f.Close(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "plot.svg"), PlotSVG(s.Results, s.Target), 0o644)
}

// ResolveImages finds a relative folder from the working directory or any
// parent (so the default fixtures work from anywhere in the repository).
func ResolveImages(dir string) string {
	if filepath.IsAbs(dir) {
		return dir
	}
	wd, err := os.Getwd()
	if err != nil {
		return dir
	}
	for d := wd; ; d = filepath.Dir(d) {
		if st, err := os.Stat(filepath.Join(d, dir)); err == nil && st.IsDir() {
			return filepath.Join(d, dir)
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// loadImages reads every regular file of dir and keeps those the gateway
// accepts (one probe each through a batch-1 pipeline), so the sweep measures
// embeddings, not refusals of unsupported files.
func loadImages(ctx context.Context, dir string, factory PipelineFactory) (images [][]byte, dropped []string, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("--images: %w", err)
	}
	p, err := factory(ctx, Setting{MaxBatch: 1, MaxDelay: time.Millisecond, MaxInflight: 1, Concurrency: 1})
	if err != nil {
		return nil, nil, err
	}
	defer p.Close(context.Background())
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, nil, err
		}
		if err := p.Embed(ctx, data); err != nil {
			switch apierr.KindOf(err) {
			case apierr.InvalidArgument, apierr.Unprocessable, apierr.UnsupportedMediaType, apierr.TooLarge:
				dropped = append(dropped, e.Name())
				continue
			}
			return nil, nil, fmt.Errorf("probe %s: %w", e.Name(), err)
		}
		images = append(images, data)
	}
	slices.Sort(dropped)
	if len(images) == 0 {
		return nil, dropped, fmt.Errorf("--images %s: no usable images", dir)
	}
	return images, dropped, nil
}
