// Package ingest is the engine behind `tusou ingest`: it walks folders,
// picks image files by content, skips files whose content is already
// indexed (content-hash ids, checked in batches without uploading bytes),
// uploads the rest as multi-file requests from parallel workers, and
// records every file's outcome (summary, JSONL report, progress).
//
// The pipeline, each stage owned by Run and stopped by its context:
//
//	walk ─▶ hash+sniff (N) ─▶ dedupe+_exists (1) ─▶ batch (1) ─▶ upload (N)
//
// Uploads use refresh=false (bulk loading) except the last request, which
// waits for the gateway's refresh once every other request has been
// acknowledged: a refresh makes everything acknowledged before it searchable,
// so when Run returns, everything it indexed is searchable.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/tusou/tusou/client"
)

// Gateway is what the engine needs from a gateway client (*client.Client).
type Gateway interface {
	Ingest(ctx context.Context, files []client.File, opts client.IngestOptions) (*client.IngestResponse, error)
	Exists(ctx context.Context, ids []string) ([]string, error)
}

// Options configure a run. Zero values take the defaults.
type Options struct {
	// Paths are folders (walked recursively), files, or "-" for a list of
	// paths, one per line, on Stdin.
	Paths []string
	Stdin io.Reader
	// Gateway receives the uploads.
	Gateway Gateway
	// Workers is how many ingest requests are in flight at once (default 4).
	Workers int
	// BatchFiles is the most files per request (default 16; the gateway's
	// server.max_files is 64 by default).
	BatchFiles int
	// BatchBytes bounds the bytes of a request (default 16 MiB; the
	// gateway's server.max_body_bytes is 48 MiB by default). A bigger file
	// goes alone.
	BatchBytes int64
	// Metadata is stored with every image, beside the per-image image_name
	// and relative_path (which win on a clash).
	Metadata map[string]any
	// NearDuplicates asks the gateway for each new image's near-duplicates
	// and reports them. Requests then wait for the refresh (refresh=wait_for),
	// so that later batches see earlier ones.
	NearDuplicates bool
	// Report receives one JSON line per file that needs a look; nil for none.
	Report io.Writer
	// Progress shows progress; nil for none.
	Progress Progress
	// Grace is how long in-flight requests may finish once the context is
	// cancelled (Ctrl-C) before they are cancelled too (default 30 s).
	Grace time.Duration
	// ExistsWait is how long a hashed file may wait for others to share its
	// existence check (default 200 ms; up to client.MaxExistsIDs per check).
	ExistsWait time.Duration
	// BatchWait is how long a partial batch waits for more files (default 200 ms).
	BatchWait time.Duration
}

func (o *Options) defaults() error {
	if o.Gateway == nil {
		return errors.New("ingest: no gateway")
	}
	if len(o.Paths) == 0 {
		return errors.New("ingest: no paths given")
	}
	setDefault(&o.Workers, 4)
	setDefault(&o.BatchFiles, 16)
	setDefault(&o.BatchBytes, 16<<20)
	setDefault(&o.Grace, 30*time.Second)
	setDefault(&o.ExistsWait, 200*time.Millisecond)
	setDefault(&o.BatchWait, 200*time.Millisecond)
	if o.Workers < 1 || o.BatchFiles < 1 || o.BatchBytes < 1 {
		return fmt.Errorf("ingest: workers (%d), batch files (%d) and batch bytes (%d) must be positive", o.Workers, o.BatchFiles, o.BatchBytes)
	}
	return nil
}

func setDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// file is an image file on its way: sniffed and hashed.
type file struct {
	entry
	id   string // lowercase hex SHA-256: the gateway's default id
	size int64
}

// engine is one run's shared state.
type engine struct {
	opts Options
	rec  *recorder
	// reqCtx carries the uploads: it outlives the run context by the grace
	// period so that acknowledged work is recorded.
	reqCtx context.Context
	// cancel stops the run, with an *abortError as cause.
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	paths   map[string]string // id → first path with that content, this run
	noCheck bool              // the gateway has no _exists: upload everything
}

// Run ingests opts.Paths. It returns the summary; the error is non-nil only
// when the run could not start or was aborted (gateway unreachable, API key
// refused) — per-file failures are in the summary and the report. When ctx
// is cancelled, Run stops taking new work, lets in-flight requests finish
// (up to Options.Grace) and returns with Summary.Interrupted set.
func Run(ctx context.Context, opts Options) (Summary, error) {
	if err := opts.defaults(); err != nil {
		return Summary{}, err
	}
	start := time.Now()
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	reqCtx, cancelReq := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelReq()
	// Once interrupted, in-flight requests get Grace to finish; an abort
	// cancels them at once. The goroutine ends with reqCtx at the latest.
	stopGrace := context.AfterFunc(runCtx, func() {
		if aborted(runCtx) != nil {
			cancelReq() // nothing left worth finishing
			return
		}
		t := time.NewTimer(opts.Grace)
		defer t.Stop()
		select {
		case <-t.C:
			cancelReq()
		case <-reqCtx.Done():
		}
	})
	defer stopGrace()

	e := &engine{opts: opts, rec: newRecorder(opts.Report, opts.Progress), reqCtx: reqCtx, cancel: cancel,
		paths: map[string]string{}}
	entries := make(chan entry, 256)
	hashed := make(chan file, 256)
	toUpload := make(chan file, 256)
	batches := make(chan []file)
	var held []file // the last batch, sent once all others are acknowledged

	var stages, hashers, uploaders sync.WaitGroup
	var walkErr error
	stages.Go(func() {
		defer close(entries)
		w := &walker{out: entries, rec: e.rec, stdin: opts.Stdin}
		walkErr = w.run(runCtx, opts.Paths)
		e.rec.walked()
	})
	for range max(2, opts.Workers) {
		hashers.Go(func() { e.hashAll(runCtx, entries, hashed) })
	}
	stages.Go(func() { hashers.Wait(); close(hashed) })
	stages.Go(func() { defer close(toUpload); e.checkExisting(runCtx, hashed, toUpload) })
	stages.Go(func() { defer close(batches); held = e.batch(runCtx, toUpload, batches) })
	for range opts.Workers {
		uploaders.Go(func() {
			for b := range batches {
				if runCtx.Err() != nil {
					continue // drain: the batcher must not block
				}
				e.upload(b, e.refresh(false))
			}
		})
	}
	uploaders.Wait()
	stages.Wait()

	searchable := opts.NearDuplicates // every request waited for its refresh
	if len(held) > 0 && runCtx.Err() == nil {
		// The gateway refreshes only when a request stores something: if the
		// last one stores nothing (every file refused), what earlier ones
		// stored becomes searchable within the index refresh interval instead.
		before := e.rec.summary().Indexed
		e.upload(held, e.refresh(true))
		searchable = searchable || e.rec.summary().Indexed > before
	}
	s := e.rec.summary()
	s.ElapsedSeconds = time.Since(start).Seconds()
	s.Searchable = searchable || s.Indexed == 0
	switch err := aborted(runCtx); {
	case walkErr != nil:
		return s, walkErr
	case err != nil:
		s.Aborted = err.Error()
		return s, err
	case ctx.Err() != nil:
		s.Interrupted = true
	}
	if e.rec.writeErr != nil {
		return s, fmt.Errorf("writing the report: %w", e.rec.writeErr)
	}
	return s, nil
}

// abortError is the cause of a run's cancellation by the engine itself, as
// opposed to the caller's (Ctrl-C).
type abortError struct{ err error }

func (a *abortError) Error() string { return a.err.Error() }

// abort stops the run on an error that is not one file's; the first one wins.
func (e *engine) abort(err error) { e.cancel(&abortError{err}) }

// aborted returns the error that aborted the run, nil if it was not aborted.
func aborted(ctx context.Context) error {
	var a *abortError
	if errors.As(context.Cause(ctx), &a) {
		return a.err
	}
	return nil
}

// refresh is the refresh policy of a request.
func (e *engine) refresh(last bool) string {
	if last || e.opts.NearDuplicates {
		return client.RefreshWaitFor
	}
	return client.RefreshFalse
}

// checkExisting drops in-run duplicates and asks the gateway which of the
// remaining ids are indexed already, in batches of up to
// client.MaxExistsIDs, waiting at most ExistsWait to fill a batch.
func (e *engine) checkExisting(ctx context.Context, in <-chan file, out chan<- file) {
	var pending []file
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func() bool {
		timer.Stop()
		ok := e.flushExisting(ctx, pending, out)
		pending = pending[:0]
		return ok
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			if !flush() {
				return
			}
		case f, ok := <-in:
			if !ok {
				flush()
				return
			}
			if first, dup := e.firstPath(f); dup {
				e.rec.file(kindDuplicate, &ReportLine{Path: f.path, Status: StatusDuplicate, ID: f.id, DuplicateOf: first})
				continue
			}
			pending = append(pending, f)
			if len(pending) == 1 {
				timer.Reset(e.opts.ExistsWait)
			}
			if len(pending) == client.MaxExistsIDs && !flush() {
				return
			}
		}
	}
}

// firstPath remembers f as the first file with its content, or says which
// file was.
func (e *engine) firstPath(f file) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p, ok := e.paths[f.id]; ok {
		return p, true
	}
	e.paths[f.id] = f.path
	return "", false
}

func (e *engine) pathOf(id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.paths[id]
}

// flushExisting sends the files of pending that are not indexed yet to out.
// It returns false when the run must stop.
func (e *engine) flushExisting(ctx context.Context, pending []file, out chan<- file) bool {
	if len(pending) == 0 {
		return true
	}
	found := map[string]bool{}
	if !e.noCheck {
		ids := make([]string, len(pending))
		for i, f := range pending {
			ids[i] = f.id
		}
		got, err := e.opts.Gateway.Exists(ctx, ids)
		var apiErr *client.APIError
		switch {
		case errors.As(err, &apiErr) && apiErr.Code == "route_not_found":
			// An older gateway: re-uploading is still idempotent, only slower.
			e.noCheck = true
		case err != nil:
			if ctx.Err() == nil {
				e.abort(fmt.Errorf("checking which files are indexed: %w", err))
			}
			return false
		}
		for _, id := range got {
			found[id] = true
		}
	}
	for _, f := range pending {
		if found[f.id] {
			e.rec.file(kindExists, nil)
			continue
		}
		select {
		case out <- f:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// batch groups files into requests of at most BatchFiles files and
// BatchBytes bytes, flushing a partial batch after BatchWait. It holds back
// the last batch and returns it, unsent, when in is exhausted.
func (e *engine) batch(ctx context.Context, in <-chan file, out chan<- []file) (held []file) {
	var cur []file
	var curBytes int64
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// ready makes cur the held batch and sends the previously held one.
	ready := func() bool {
		timer.Stop()
		prev := held
		held, cur, curBytes = cur, nil, 0
		if prev == nil {
			return true
		}
		select {
		case out <- prev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			if !ready() {
				return nil
			}
		case f, ok := <-in:
			if !ok {
				if len(cur) > 0 && !ready() {
					return nil
				}
				return held
			}
			if len(cur) > 0 && curBytes+f.size > e.opts.BatchBytes && !ready() {
				return nil
			}
			cur = append(cur, f)
			curBytes += f.size
			if len(cur) == 1 {
				timer.Reset(e.opts.BatchWait)
			}
			if (len(cur) == e.opts.BatchFiles || curBytes >= e.opts.BatchBytes) && !ready() {
				return nil
			}
		}
	}
}

// fileMetadata is what every image gets: the article's image_name and
// relative_path, over the run's metadata.
func fileMetadata(f file) map[string]any {
	return map[string]any{"image_name": baseName(f.rel), "relative_path": f.rel}
}
