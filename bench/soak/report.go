package main

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"
)

// report renders the run as Markdown and judges it against the soak's
// criteria: no error but backpressure outside restart windows, no
// acknowledged write lost, RSS after warm-up within ±10% of its mean.
type report struct {
	opts    options
	rec     *recorder
	rss     []sample
	lost    map[string][]string
	aborted bool
	gw      *gateway
}

const rssTolerance = 0.10

func mb(b int64) string { return fmt.Sprintf("%.0f MB", float64(b)/1e6) }

func (r report) markdown() (string, bool) {
	var b strings.Builder
	rec := r.rec
	rec.mu.Lock()
	defer rec.mu.Unlock()
	o := r.opts
	elapsed := time.Since(rec.start).Round(time.Second)
	fmt.Fprintf(&b, "# tusou soak report\n\n")
	fmt.Fprintf(&b, "- started %s, load %s (ran %s%s) against `%s serve` (pid %d), %d CPUs\n",
		rec.start.UTC().Format(time.RFC3339), o.duration, elapsed, map[bool]string{true: ", ABORTED"}[r.aborted],
		o.bin, r.gw.cmd.Process.Pid, runtime.NumCPU())
	fmt.Fprintf(&b, "- clients: %d REST ingest (raw and 3-file multipart, 1 in 4 with refresh=false), %d REST search/get, %d sidecar (index with image_base64, kNN with query_vector_builder); %s pause between requests\n",
		o.ingesters, o.searchers, o.sidecars, o.think)
	if o.restarts {
		fmt.Fprintf(&b, "- restarts: Triton and Elasticsearch %d times each; errors until %s after the gateway is ready again count as the restart's\n", o.cycles, o.grace)
	} else {
		fmt.Fprintf(&b, "- restarts: off (-restarts=false)\n")
	}

	// Requests.
	fmt.Fprintf(&b, "\n## Requests\n\n| operation | ok | 429/503 | errors outside restarts | errors in restart windows | p50 | p99 |\n|---|---:|---:|---:|---:|---:|---:|\n")
	names := make([]string, 0, len(rec.ops))
	for n := range rec.ops {
		names = append(names, n)
	}
	sort.Strings(names)
	var outside, total int
	for _, n := range names {
		s := rec.ops[n]
		outside += s.failed
		total += s.ok
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %s | %s |\n", n, s.ok, s.backpressure, s.failed, s.failedInRestart, pct(s.latency, 0.5), pct(s.latency, 0.99))
	}
	fmt.Fprintf(&b, "\n%d requests succeeded in %s.\n", total, elapsed)
	if len(rec.failures) > 0 {
		fmt.Fprintf(&b, "\nFailures (first 15 outside restart windows, then the first 5 inside):\n\n")
		n, m := 0, 0
		for _, f := range rec.failures {
			if !f.inRestart && n < 15 {
				n++
				fmt.Fprintf(&b, "- +%s %s: %s\n", f.at.Sub(rec.start).Round(time.Second), f.op, f.what)
			}
		}
		for _, f := range rec.failures {
			if f.inRestart && m < 5 {
				m++
				fmt.Fprintf(&b, "- +%s %s (restart window): %s\n", f.at.Sub(rec.start).Round(time.Second), f.op, f.what)
			}
		}
	}

	// Restarts.
	if len(rec.windows) > 0 {
		fmt.Fprintf(&b, "\n## Restarts\n\n| service | at | back (ready + grace) after | note |\n|---|---:|---:|---|\n")
		for _, w := range rec.windows {
			back := "still open"
			if !w.end.IsZero() {
				back = w.end.Sub(w.start).Round(time.Second).String()
			}
			fmt.Fprintf(&b, "| %s | +%s | %s | %s |\n", w.service, w.start.Sub(rec.start).Round(time.Second), back, w.note)
		}
	}

	// Writes.
	fmt.Fprintf(&b, "\n## Acknowledged writes\n\n- REST ingest: %d acknowledged ids\n- sidecar index: %d acknowledged documents\n", len(rec.acked), len(rec.sideAck))
	lostN := 0
	kinds := make([]string, 0, len(r.lost))
	for k := range r.lost {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		ids := r.lost[k]
		lostN += len(ids)
		fmt.Fprintf(&b, "- **lost (%s): %d**, e.g. %s\n", k, len(ids), strings.Join(ids[:min(5, len(ids))], ", "))
	}
	if lostN == 0 {
		fmt.Fprintf(&b, "- lost: 0 (every acknowledged id found afterwards)\n")
	}

	// RSS.
	fmt.Fprintf(&b, "\n## Gateway RSS (VmRSS from /proc, every %s)\n\n", o.sample)
	warm := r.rss[:0:0]
	for _, s := range r.rss {
		if s.at >= o.warmup {
			warm = append(warm, s)
		}
	}
	rows := 12
	step := max(1, len(r.rss)/rows)
	fmt.Fprintf(&b, "| t | RSS | |\n|---:|---:|---|\n")
	for i := 0; i < len(r.rss); i += step {
		s := r.rss[i]
		fmt.Fprintf(&b, "| +%s | %s | %s |\n", s.at.Round(time.Second), mb(s.rss), tag(s.at < o.warmup, "warm-up")+tag(s.inRestart, "restart"))
	}
	if n := len(r.rss); n > 0 && (n-1)%step != 0 {
		s := r.rss[n-1]
		fmt.Fprintf(&b, "| +%s | %s | %s |\n", s.at.Round(time.Second), mb(s.rss), tag(s.inRestart, "restart"))
	}
	rssOK := false
	if len(warm) > 0 {
		var sum, lo, hi int64 = 0, warm[0].rss, warm[0].rss
		for _, s := range warm {
			sum += s.rss
			lo, hi = min(lo, s.rss), max(hi, s.rss)
		}
		mean := float64(sum) / float64(len(warm))
		// Judged on the means of the four quarters of the run, not on single
		// samples: one sample lands anywhere in a GC cycle's sawtooth (±10%
		// of an 80 MB process is one cycle), while a leak moves the quarters.
		quarters := make([]string, 0, 4)
		dev := 0.0
		for q := range 4 {
			part := warm[q*len(warm)/4 : (q+1)*len(warm)/4]
			if len(part) == 0 {
				continue
			}
			m := meanOf(part)
			dev = max(dev, math.Abs(m-mean)/mean)
			quarters = append(quarters, mb(int64(m)))
		}
		rssOK = dev <= rssTolerance
		fmt.Fprintf(&b, "\nAfter the %s warm-up (%d samples): mean %s, single samples %s..%s (%+.1f%%..%+.1f%%); quarter means %s: largest deviation from the mean **±%.1f%%**.\n",
			o.warmup, len(warm), mb(int64(mean)), mb(lo), mb(hi), 100*(float64(lo)-mean)/mean, 100*(float64(hi)-mean)/mean,
			strings.Join(quarters, " → "), 100*dev)
	} else {
		fmt.Fprintf(&b, "\nNo samples after the %s warm-up.\n", o.warmup)
	}

	// Verdict.
	pass := outside == 0 && lostN == 0 && rssOK && !r.aborted
	fmt.Fprintf(&b, "\n## Verdict: %s\n\n", map[bool]string{true: "PASS", false: "FAIL"}[pass])
	fmt.Fprintf(&b, "- %s non-backpressure errors outside restart windows: %d\n", mark(outside == 0), outside)
	fmt.Fprintf(&b, "- %s acknowledged writes lost: %d\n", mark(lostN == 0), lostN)
	fmt.Fprintf(&b, "- %s RSS flat within ±%.0f%% after warm-up (quarter means)\n", mark(rssOK), 100*rssTolerance)
	if r.aborted {
		fmt.Fprintf(&b, "- ✗ the run was interrupted\n")
	}
	return b.String(), pass
}

func meanOf(s []sample) float64 {
	var sum int64
	for _, x := range s {
		sum += x.rss
	}
	return float64(sum) / float64(len(s))
}

func tag(on bool, s string) string {
	if on {
		return s + " "
	}
	return ""
}

func mark(ok bool) string {
	if ok {
		return "✓"
	}
	return "✗"
}

func pct(d []time.Duration, q float64) string {
	if len(d) == 0 {
		return "-"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))].Round(time.Millisecond).String()
}
