package ingest

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/tusou/tusou/client"
)

// Report line statuses.
const (
	// StatusFailed: the file is not indexed (refused by the gateway, unreadable, ...).
	StatusFailed = "failed"
	// StatusUnsupported: an image in a format tusou does not decode (HEIC, TIFF, ...).
	StatusUnsupported = "unsupported"
	// StatusDuplicate: same bytes as another file of this run (DuplicateOf).
	StatusDuplicate = "duplicate"
	// StatusNearDuplicates: indexed, and similar images exist (--report-duplicates).
	StatusNearDuplicates = "near_duplicates"
	// StatusSkipped: a path not followed (symbolic link loop, dangling link).
	StatusSkipped = "skipped"
)

// ReportLine is one line of the JSONL report: one file (or path) that needs
// a look. Indexed and already-indexed files get no line.
type ReportLine struct {
	Time   time.Time           `json:"time"`
	Path   string              `json:"path"`
	Status string              `json:"status"`
	ID     string              `json:"id,omitempty"`
	Error  *client.ErrorDetail `json:"error,omitempty"`
	// Format is the sniffed format of an unsupported image.
	Format string `json:"format,omitempty"`
	// DuplicateOf is the path of the first file with the same bytes.
	DuplicateOf    string          `json:"duplicate_of,omitempty"`
	NearDuplicates []NearDuplicate `json:"near_duplicates,omitempty"`
}

// NearDuplicate is an indexed image similar to an ingested one; Path is set
// when that image came from this run.
type NearDuplicate struct {
	ID    string  `json:"id"`
	Score float64 `json:"score"`
	Path  string  `json:"path,omitempty"`
}

// NearDuplicatePair is one ingested file and its near-duplicates, for the summary.
type NearDuplicatePair struct {
	Path           string          `json:"path"`
	ID             string          `json:"id"`
	NearDuplicates []NearDuplicate `json:"near_duplicates"`
}

func detail(code, format string, args ...any) *client.ErrorDetail {
	return &client.ErrorDetail{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Summary is what a run did, file by file counted once.
type Summary struct {
	// Files is every regular file found; each ends in exactly one of the
	// counts below, or in none when the run was interrupted first.
	Files int `json:"files"`
	// Indexed files were created by this run.
	Indexed int `json:"indexed"`
	// AlreadyIndexed files were indexed before: skipped by the existence
	// check (bytes not uploaded) or answered "exists".
	AlreadyIndexed int `json:"already_indexed"`
	// Duplicates have the same bytes as another file of this run.
	Duplicates int `json:"duplicates"`
	// Failed files (and unreadable or missing paths) are not indexed.
	Failed int `json:"failed"`
	// Unsupported are images in a format tusou does not decode.
	Unsupported int `json:"unsupported"`
	// NotImages are files whose content is no image.
	NotImages int `json:"not_images"`
	// Skipped paths were not followed (symbolic link loops, dangling links).
	Skipped int `json:"skipped"`
	// NearDuplicates lists files with near-duplicates (--report-duplicates).
	NearDuplicates []NearDuplicatePair `json:"near_duplicates,omitempty"`
	// UploadedFiles, UploadedBytes count what was sent to the gateway.
	UploadedFiles int   `json:"uploaded_files"`
	UploadedBytes int64 `json:"uploaded_bytes"`
	// Requests counts ingest requests (retries not included).
	Requests int `json:"requests"`
	// ElapsedSeconds is the run's wall time.
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// Searchable says the final request waited for the gateway's refresh.
	Searchable bool `json:"searchable"`
	// Interrupted: stopped by a signal; a rerun continues where it stopped.
	Interrupted bool `json:"interrupted"`
	// Aborted is why the run stopped early on an error that is not one
	// file's (gateway unreachable, API key refused); empty otherwise.
	Aborted string `json:"aborted,omitempty"`
	// ReportLines is how many lines the report got.
	ReportLines int `json:"report_lines"`

	// fileFailures are the Failed that were files (not paths), for Done.
	fileFailures int
}

// Done is how many files reached an outcome.
func (s *Summary) Done() int {
	return s.Indexed + s.AlreadyIndexed + s.Duplicates + s.fileFailures + s.Unsupported + s.NotImages
}

// kind is a file's outcome.
type kind int

const (
	kindIndexed kind = iota
	kindExists
	kindDuplicate
	kindFailed
	kindUnsupported
	kindNotImage
)

// recorder counts outcomes, writes report lines and feeds the progress
// display. One mutex: outcomes are far rarer than the work behind them.
type recorder struct {
	mu       sync.Mutex
	s        Summary
	w        io.Writer
	enc      *json.Encoder
	progress Progress
	walkDone bool
	writeErr error
	now      func() time.Time
}

func newRecorder(w io.Writer, p Progress) *recorder {
	r := &recorder{w: w, progress: p, now: time.Now}
	if w != nil {
		r.enc = json.NewEncoder(w)
		r.enc.SetEscapeHTML(false)
	}
	return r
}

// found counts a file discovered by the walk.
func (r *recorder) found() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.s.Files++
	r.update()
}

// walked says the walk is over: the total is final.
func (r *recorder) walked() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.walkDone = true
	r.update()
}

// file records one file's outcome, with its report line when it needs a look.
func (r *recorder) file(k kind, line *ReportLine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch k {
	case kindIndexed:
		r.s.Indexed++
	case kindExists:
		r.s.AlreadyIndexed++
	case kindDuplicate:
		r.s.Duplicates++
	case kindFailed:
		r.s.Failed++
		r.s.fileFailures++
	case kindUnsupported:
		r.s.Unsupported++
	case kindNotImage:
		r.s.NotImages++
	}
	if line != nil {
		r.write(line)
		if line.Status == StatusNearDuplicates {
			r.s.NearDuplicates = append(r.s.NearDuplicates, NearDuplicatePair{Path: line.Path, ID: line.ID, NearDuplicates: line.NearDuplicates})
		}
	}
	r.update()
}

// problem records a path that is not a file outcome (a loop, a missing argument).
func (r *recorder) problem(line ReportLine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if line.Status == StatusFailed {
		r.s.Failed++
	} else {
		r.s.Skipped++
	}
	r.write(&line)
	r.update()
}

// uploaded counts one answered ingest request.
func (r *recorder) uploaded(files int, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.s.Requests++
	r.s.UploadedFiles += files
	r.s.UploadedBytes += bytes
	r.update()
}

// write appends one line; each line is one write call so that a killed
// run leaves whole lines behind.
func (r *recorder) write(line *ReportLine) {
	if r.enc == nil || r.writeErr != nil {
		return
	}
	line.Time = r.now().UTC()
	if err := r.enc.Encode(line); err != nil {
		r.writeErr = err
		return
	}
	r.s.ReportLines++
}

func (r *recorder) update() {
	if r.progress != nil {
		r.progress.Update(Snapshot{Done: r.s.Done(), Total: r.s.Files, TotalFinal: r.walkDone,
			Failed: r.s.Failed, Bytes: r.s.UploadedBytes})
	}
}

func (r *recorder) summary() Summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.s
}
