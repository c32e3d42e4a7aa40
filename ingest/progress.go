package ingest

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Snapshot is the run's progress at one moment.
type Snapshot struct {
	// Done files reached an outcome; Total were found so far.
	Done, Total int
	// TotalFinal says the walk is over, so an ETA means something.
	TotalFinal bool
	Failed     int
	Bytes      int64
}

// Progress shows a run's progress. Update is called after every outcome,
// under the recorder's lock: implementations must be quick.
type Progress interface {
	Update(Snapshot)
	// Close stops the display (the summary follows it).
	Close()
}

// Bar is an interactive progress bar with count, rate and ETA, for a terminal.
type Bar struct {
	mu  sync.Mutex
	w   io.Writer
	bar *progressbar.ProgressBar
	max int64
}

// NewBar draws a bar on w (a terminal).
func NewBar(w io.Writer) *Bar {
	return &Bar{w: w, bar: progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("indexing"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("files"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionFullWidth(),
		progressbar.OptionSetRenderBlankState(true),
	)}
}

// Update implements Progress.
func (b *Bar) Update(s Snapshot) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// The bar is a spinner until files are known. A finished bar never
	// redraws, so while the walk goes on the bar stays one file short of full.
	t := int64(s.Total)
	if !s.TotalFinal {
		t++
	}
	if t != b.max && s.Total > 0 {
		b.max = t
		b.bar.ChangeMax64(t)
	}
	if s.Failed > 0 {
		b.bar.Describe(fmt.Sprintf("indexing (%d failed)", s.Failed))
	}
	_ = b.bar.Set64(int64(s.Done))
}

// Close implements Progress.
func (b *Bar) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	_ = b.bar.Exit()
	fmt.Fprintln(b.w) // the summary starts on a line of its own
}

// Lines prints a plain progress line every interval, for logs and pipes
// where a redrawn bar would be noise.
type Lines struct {
	w        io.Writer
	start    time.Time
	mu       sync.Mutex
	last     Snapshot
	stop     chan struct{}
	finished chan struct{}
}

// NewLines starts printing to w every interval until Close.
func NewLines(w io.Writer, interval time.Duration) *Lines {
	l := &Lines{w: w, start: time.Now(), stop: make(chan struct{}), finished: make(chan struct{})}
	go l.loop(interval)
	return l
}

func (l *Lines) loop(interval time.Duration) {
	defer close(l.finished)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			s := l.last
			l.mu.Unlock()
			fmt.Fprintln(l.w, progressLine(s, time.Since(l.start)))
		}
	}
}

// Update implements Progress.
func (l *Lines) Update(s Snapshot) {
	l.mu.Lock()
	l.last = s
	l.mu.Unlock()
}

// Close implements Progress.
func (l *Lines) Close() {
	close(l.stop)
	<-l.finished
}

// progressLine renders e.g. "indexing: 1200/5000 files (24%), 57.3 files/s, 12.0 MB/s, ETA 1m6s, 3 failed".
func progressLine(s Snapshot, elapsed time.Duration) string {
	rate := 0.0
	if secs := elapsed.Seconds(); secs > 0 {
		rate = float64(s.Done) / secs
	}
	total := fmt.Sprintf("%d", s.Total)
	if !s.TotalFinal {
		total += "+"
	}
	line := fmt.Sprintf("indexing: %d/%s files", s.Done, total)
	if s.Total > 0 {
		line += fmt.Sprintf(" (%d%%)", s.Done*100/s.Total)
	}
	line += fmt.Sprintf(", %.1f files/s, %s/s", rate, humanBytes(float64(s.Bytes)/max(elapsed.Seconds(), 1e-9)))
	if s.TotalFinal && rate > 0 {
		eta := time.Duration(float64(s.Total-s.Done) / rate * float64(time.Second))
		line += ", ETA " + eta.Round(time.Second).String()
	}
	if s.Failed > 0 {
		line += fmt.Sprintf(", %d failed", s.Failed)
	}
	return line
}

func humanBytes(b float64) string {
	const unit = 1000
	if b < unit {
		return fmt.Sprintf("%.0f B", b)
	}
	div, exp := float64(unit), 0
	for n := b / unit; n >= unit && exp < 4; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", b/div, "kMGTP"[exp])
}
