package tune

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tusou/tusou/triton"
)

// maxRefusedShare is the share of refused calls a setting may have and still
// count as meeting the target: refusals are errors to the client.
const maxRefusedShare = 0.001

// Best returns the index of the result with the highest throughput whose p99
// is within target and that neither failed nor (beyond 0.1 %) refused calls;
// -1 when none qualifies.
func Best(results []Result, target time.Duration) int {
	best := -1
	for i, r := range results {
		if !qualifies(r, target) {
			continue
		}
		if best < 0 || r.Throughput > results[best].Throughput {
			best = i
		}
	}
	return best
}

func qualifies(r Result, target time.Duration) bool {
	total := r.OK + r.Refused + r.Failed
	return r.OK > 0 && r.Failed == 0 && r.P99 <= target &&
		float64(r.Refused) <= maxRefusedShare*float64(total)
}

// Check is one consistency check of the recommendation.
type Check struct {
	OK      bool
	Message string
}

// Recommendation is what to configure.
type Recommendation struct {
	Batcher triton.BatcherConfig
	// GatewayYAML is the gateway configuration fragment.
	GatewayYAML string
	// Pbtxt lists config.pbtxt changes for the model (empty: none needed).
	Pbtxt  []string
	Checks []Check
}

// Recommend turns the best result into settings and checks them against
// Triton's model configuration for a deployment of pods gateway replicas.
// base is the configured batcher (its queue_size is kept when large enough).
func Recommend(best Result, limits ModelLimits, pods int, base triton.BatcherConfig) Recommendation {
	b := triton.BatcherConfig{
		MaxBatchSize: best.MaxBatch,
		MaxDelay:     best.MaxDelay,
		MaxInflight:  best.MaxInflight,
		// Every caller of the measured load may wait at once; the queue must
		// hold them (and one full batch), or the load measured here is refused.
		QueueSize: max(base.QueueSize, best.MaxBatch, best.Concurrency),
	}
	r := Recommendation{Batcher: b}
	check := func(ok bool, format string, args ...any) {
		r.Checks = append(r.Checks, Check{OK: ok, Message: fmt.Sprintf(format, args...)})
	}
	if limits.MaxBatchSize > 0 {
		ok := b.MaxBatchSize <= limits.MaxBatchSize
		check(ok, "gateway max_batch_size %d <= Triton max_batch_size %d", b.MaxBatchSize, limits.MaxBatchSize)
		if !ok {
			r.Pbtxt = append(r.Pbtxt, fmt.Sprintf("max_batch_size: %d", b.MaxBatchSize))
		}
	}
	sent := pods * b.MaxInflight // requests the gateways can have at Triton at once
	if limits.MaxQueueSize > 0 {
		ok := sent <= limits.MaxQueueSize+limits.Instances
		check(ok, "pods x max_inflight = %d x %d = %d <= Triton max_queue_size %d + instances %d (else Triton answers \"queue full\" in steady state)",
			pods, b.MaxInflight, sent, limits.MaxQueueSize, limits.Instances)
		if !ok {
			r.Pbtxt = append(r.Pbtxt, fmt.Sprintf("dynamic_batching { default_queue_policy { max_queue_size: %d } }", sent))
		}
	}
	check(sent >= 2*limits.Instances, "pods x max_inflight = %d >= 2 x Triton instances %d (keeps every instance busy while the next batch travels)",
		sent, limits.Instances)
	check(b.QueueSize >= b.MaxBatchSize, "queue_size %d >= max_batch_size %d", b.QueueSize, b.MaxBatchSize)
	if limits.Dynamic && len(limits.PreferredBatch) > 0 {
		minPref := limits.PreferredBatch[0]
		for _, p := range limits.PreferredBatch {
			minPref = min(minPref, p)
		}
		reach := pods * b.MaxInflight * b.MaxBatchSize
		check(reach >= minPref, "Triton preferred_batch_size %v reachable: pods x max_inflight x max_batch_size = %d", limits.PreferredBatch, reach)
		if reach < minPref {
			r.Pbtxt = append(r.Pbtxt, fmt.Sprintf("dynamic_batching { preferred_batch_size: [ %d ] }  # Triton waits max_queue_delay for sizes it can never reach", b.MaxBatchSize))
		}
	}
	r.GatewayYAML = fmt.Sprintf(`triton:
  image_model:
    batcher:
      max_batch_size: %d
      max_delay: %s
      max_inflight: %d
      queue_size: %d
`, b.MaxBatchSize, b.MaxDelay, b.MaxInflight, b.QueueSize)
	return r
}

// WriteTable prints the results, marking best with "*".
func WriteTable(w io.Writer, results []Result, best int) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, " \tbatch\tdelay\tinflight\tconc\timg/s\tp50 ms\tp99 ms\tgw batch\tTriton batch\tTriton queue ms\tTriton compute ms\tGPU util\trefused\tfailed\t")
	for i, r := range results {
		mark := ""
		if i == best {
			mark = "*"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t\n",
			mark, r.MaxBatch, r.MaxDelay, r.MaxInflight, r.Concurrency, r.Throughput,
			ms(r.P50), ms(r.P99), num(r.GatewayBatch), tritonBatch(r), tritonMS(r, r.Triton.QueuePerRequest),
			tritonMS(r, r.Triton.ComputePerExec), pct(r.Triton.GPUUtil), r.Refused, r.Failed)
	}
	tw.Flush()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

func num(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

func pct(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*v)
}

func tritonBatch(r Result) string {
	if !r.Triton.Valid {
		return "-"
	}
	return num(r.Triton.Batch)
}

func tritonMS(r Result, d time.Duration) string {
	if !r.Triton.Valid || r.Triton.Executions == 0 {
		return "-"
	}
	return ms(d)
}

// Summary is everything the report says.
type Summary struct {
	Target   time.Duration
	Pods     int
	Images   int
	Model    string
	Limits   ModelLimits
	Results  []Result
	Best     int
	Rec      *Recommendation
	Verify   *Result // the best setting measured again, if run
	Started  time.Time
	Duration time.Duration
	Notes    []string
}

// VerifyRatio is the verify throughput over the predicted one (NaN when no
// verify step ran).
func (s Summary) VerifyRatio() float64 {
	if s.Verify == nil || s.Best < 0 || s.Results[s.Best].Throughput == 0 {
		return math.NaN()
	}
	return s.Verify.Throughput / s.Results[s.Best].Throughput
}

// WriteText prints the recommendation part of the summary (after the table).
func (s Summary) WriteText(w io.Writer) {
	if s.Best < 0 {
		fmt.Fprintf(w, "\nNo setting met p99 <= %s without refusals or failures. Lower the load (--concurrency), or look at the fastest p99 above: the path itself is slower than the target on this hardware.\n", s.Target)
		return
	}
	b := s.Results[s.Best]
	fmt.Fprintf(w, "\nBest throughput with p99 <= %s: %.1f img/s at %s (p99 %s ms).\n", s.Target, b.Throughput, b.Setting, ms(b.P99))
	if s.Verify != nil {
		fmt.Fprintf(w, "Verify (same setting, measured again): %.1f img/s, p99 %s ms: %.0f%% of the prediction.\n",
			s.Verify.Throughput, ms(s.Verify.P99), 100*s.VerifyRatio())
	}
	fmt.Fprintf(w, "\nGateway configuration (YAML):\n\n%s", indent(s.Rec.GatewayYAML, "  "))
	if len(s.Rec.Pbtxt) > 0 {
		fmt.Fprintf(w, "\n%s config.pbtxt changes:\n\n", s.Model)
		for _, l := range s.Rec.Pbtxt {
			fmt.Fprintf(w, "  %s\n", l)
		}
	} else {
		fmt.Fprintf(w, "\n%s config.pbtxt: no change needed.\n", s.Model)
	}
	fmt.Fprintf(w, "\nChecks (for %d gateway pod(s), --pods):\n", s.Pods)
	for _, c := range s.Rec.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FIX "
		}
		fmt.Fprintf(w, "  %s %s\n", mark, c.Message)
	}
}

func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "")
}

// WriteMarkdown writes the report ops attach to a change; plot is the file
// name of the SVG plot next to it.
func (s Summary) WriteMarkdown(w io.Writer, plot string) {
	fmt.Fprintf(w, "# tusou tune report\n\n")
	fmt.Fprintf(w, "%s, %s; model `%s` (Triton max_batch_size %d, %d instance(s), max_queue_size %d, preferred %v, max_queue_delay %s); %d images; target p99 <= %s; %d gateway pod(s).\n\n",
		s.Started.UTC().Format(time.RFC3339), s.Duration.Round(time.Second), s.Model, s.Limits.MaxBatchSize, s.Limits.Instances,
		s.Limits.MaxQueueSize, s.Limits.PreferredBatch, s.Limits.MaxQueueDelay, s.Images, s.Target, s.Pods)
	fmt.Fprintf(w, "Each row ran the gateway's decode, preprocess and image micro-batcher in-process against Triton; latency is per image, end to end. Gateway batch: items per ModelInfer call; Triton batch: `nv_inference_count / nv_inference_exec_count` during the step (includes any other traffic to that Triton).\n\n")
	fmt.Fprintf(w, "![throughput and p99 vs batch size](%s)\n\n", plot)
	fmt.Fprintln(w, "| | batch | delay | inflight | conc | img/s | p50 ms | p99 ms | gw batch | Triton batch | Triton queue ms | Triton compute ms | GPU util | refused | failed |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for i, r := range s.Results {
		mark := ""
		if i == s.Best {
			mark = "**best**"
		}
		fmt.Fprintf(w, "| %s | %d | %s | %d | %d | %.1f | %s | %s | %s | %s | %s | %s | %s | %d | %d |\n",
			mark, r.MaxBatch, r.MaxDelay, r.MaxInflight, r.Concurrency, r.Throughput, ms(r.P50), ms(r.P99),
			num(r.GatewayBatch), tritonBatch(r), tritonMS(r, r.Triton.QueuePerRequest), tritonMS(r, r.Triton.ComputePerExec),
			pct(r.Triton.GPUUtil), r.Refused, r.Failed)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "```")
	s.WriteText(w)
	fmt.Fprintln(w, "```")
	for _, n := range s.Notes {
		fmt.Fprintf(w, "\n%s\n", n)
	}
}
