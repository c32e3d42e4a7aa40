package tune

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"slices"
	"time"
)

// PlotSVG draws throughput (solid, left axis) and p99 latency (dashed, right
// axis) against the gateway batch size, one colour per offered load and
// delay/inflight combination, with the p99 target as a dotted line. A
// hand-written SVG: a few lines of markup, no plotting dependency in the
// gateway binary, and it renders in any browser and in Markdown viewers.
func PlotSVG(results []Result, target time.Duration) []byte {
	const (
		W, H                 = 900, 460
		left, right, top, bo = 70, 210, 40, 50
	)
	pw, ph := float64(W-left-right), float64(H-top-bo)
	var batches []int
	maxTP, maxP99 := 1.0, float64(target)/1e6
	type key struct {
		conc, inflight int
		delay          time.Duration
	}
	series := map[key][]Result{}
	var keys []key
	for _, r := range results {
		if !slices.Contains(batches, r.MaxBatch) {
			batches = append(batches, r.MaxBatch)
		}
		maxTP = math.Max(maxTP, r.Throughput)
		maxP99 = math.Max(maxP99, float64(r.P99)/1e6)
		k := key{r.Concurrency, r.MaxInflight, r.MaxDelay}
		if _, ok := series[k]; !ok {
			keys = append(keys, k)
		}
		series[k] = append(series[k], r)
	}
	slices.Sort(batches)
	maxTP *= 1.1
	maxP99 *= 1.1
	// Batch sizes are spaced evenly (they are usually powers of two).
	x := func(batch int) float64 {
		i := slices.Index(batches, batch)
		if len(batches) == 1 {
			return float64(left) + pw/2
		}
		return float64(left) + pw*float64(i)/float64(len(batches)-1)
	}
	yTP := func(v float64) float64 { return float64(top) + ph*(1-v/maxTP) }
	yLat := func(msv float64) float64 { return float64(top) + ph*(1-msv/maxP99) }

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15">tusou tune: throughput (solid) and p99 latency (dashed) vs gateway max_batch_size</text>`+"\n", left)
	// Axes and ticks.
	fmt.Fprintf(&b, `<path d="M%d %d V%d H%d V%d" fill="none" stroke="black"/>`+"\n", left, top, H-bo, W-right, top)
	for i := 0; i <= 4; i++ {
		f := float64(i) / 4
		y := float64(top) + ph*(1-f)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, W-right, y, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%.0f</text>`+"\n", left-6, y+4, f*maxTP)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f">%.0f</text>`+"\n", W-right+6, y+4, f*maxP99)
	}
	for _, bs := range batches {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", x(bs), H-bo+18, bs)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">gateway max_batch_size</text>`+"\n", float64(left)+pw/2, H-12)
	fmt.Fprintf(&b, `<text transform="translate(18 %.1f) rotate(-90)" text-anchor="middle">images/s</text>`+"\n", float64(top)+ph/2)
	fmt.Fprintf(&b, `<text transform="translate(%d %.1f) rotate(90)" text-anchor="middle">p99 ms</text>`+"\n", W-right+44, float64(top)+ph/2)
	// Target.
	ty := yLat(float64(target) / 1e6)
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="red" stroke-dasharray="2 3"/>`+"\n", left, W-right, ty, ty)
	fmt.Fprintf(&b, `<text x="%d" y="%.1f" fill="red" text-anchor="end">p99 target %s</text>`+"\n", W-right-4, ty-4, target)
	colours := []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"}
	for i, k := range keys {
		c := colours[i%len(colours)]
		rs := series[k]
		slices.SortFunc(rs, func(a, b Result) int { return a.MaxBatch - b.MaxBatch })
		var tp, lat bytes.Buffer
		for j, r := range rs {
			cmd := "L"
			if j == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&tp, "%s%.1f %.1f ", cmd, x(r.MaxBatch), yTP(r.Throughput))
			fmt.Fprintf(&lat, "%s%.1f %.1f ", cmd, x(r.MaxBatch), yLat(float64(r.P99)/1e6))
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x(r.MaxBatch), yTP(r.Throughput), c)
		}
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", tp.String(), c)
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="2" stroke-dasharray="6 4"/>`+"\n", lat.String(), c)
		ly := top + 10 + 18*i
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"/>`+"\n", W-right+62, W-right+80, ly, ly, c)
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11">%s</text>`+"\n", W-right+84, ly+4,
			html.EscapeString(fmt.Sprintf("conc %d, %s, infl %d", k.conc, k.delay, k.inflight)))
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}
