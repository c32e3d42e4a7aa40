package models

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/esproxy"
)

// Originals is the store of the ingested images' original bytes
// (blobstore): a switch re-embeds every document from it. A missing
// original is an apierr NotFound.
type Originals interface {
	Open(ctx context.Context, id string) (io.ReadSeekCloser, int64, error)
}

// store is what a switch needs of a generation's index; *esproxy.Client
// pinned to the index (Generation.Store) is the real one.
type store interface {
	Scan(ctx context.Context, pageSize int, fn func(page []esproxy.ScanHit) error) error
	Exists(ctx context.Context, ids []string) ([]string, error)
	GetDocs(ctx context.Context, ids []string) ([]esproxy.StoredDoc, error)
	Bulk(ctx context.Context, docs []esproxy.Doc, refresh string) ([]esproxy.ItemResult, error)
	DeleteIfUnchanged(ctx context.Context, id string, seqNo, primaryTerm int64) (esproxy.DeleteResult, error)
	Count(ctx context.Context) (int64, error)
	CountCreatedBefore(ctx context.Context, t time.Time) (int64, error)
	Vector(ctx context.Context, id string) ([]float32, error)
	KNN(ctx context.Context, q esproxy.KNNQuery) ([]esproxy.Hit, error)
}

// maxPasses bounds the backfill+reconcile rounds of one switch. Under a
// steady dual-write the second pass finds nothing to do; more passes only
// happen when writes race a pass, and verification catches what is left.
const maxPasses = 5

// probeText is the text query verification runs on the target generation.
const probeText = "a photo"

// probeDocs is how many stored documents verification looks up by their
// own vector, among the probeK nearest.
const (
	probeDocs = 3
	probeK    = 10
)

// settleWindow is how old a document must be for verification to require
// it in both generations even while writes are in flight: far longer than
// any one dual-write takes.
const settleWindow = time.Minute

// verifyAttempts bounds the count comparisons of verification.
const verifyAttempts = 3

// maxExamples is how many failing ids an error message names.
const maxExamples = 5

// copier makes the target index hold exactly the source's documents, each
// embedded by the target generation from its stored original. It is the
// diff-based, resumable heart of a switch: every pass compares ids, so an
// interrupted run rerun (or a dual-write that got there first) finds the
// work already done.
type copier struct {
	from, to  store
	images    ImageEmbedder
	texts     TextEmbedder
	originals Originals
	opts      SwitchOptions
	prog      *progress
	// state reports the phase (backfilling, reconciling).
	state func(string)
	log   *zap.Logger
}

// sync runs backfill and reconcile passes until one changes nothing (at
// most maxPasses). Too many failed documents stop it with an error.
func (c *copier) sync(ctx context.Context) error {
	for pass := 1; pass <= maxPasses; pass++ {
		created, err := c.backfill(ctx, pass)
		if err != nil {
			return err
		}
		removed, err := c.reconcile(ctx)
		if err != nil {
			return err
		}
		c.log.Info("switch pass", zap.Int("pass", pass), zap.Int64("created", created), zap.Int64("removed", removed),
			zap.Int("failed", c.prog.failedCount()), zap.Int("missing_originals", c.prog.missingCount()))
		if created == 0 && removed == 0 {
			return nil
		}
	}
	return nil
}

// backfill creates in the target every source document it lacks and
// returns how many it created. Pass 1 counts the documents found present
// as skipped; later passes only re-check.
//
// A page's bulk write runs while the next page is compared and embedded
// (one write in flight at most): the encoders, not Elasticsearch, should
// set the pace.
func (c *copier) backfill(ctx context.Context, pass int) (created int64, err error) {
	c.state(StateBackfilling)
	total, err := c.from.Count(ctx)
	if err != nil {
		return 0, err
	}
	c.prog.startPass(pass, total)
	var (
		n       atomic.Int64
		writing chan error // the write in flight, nil: none
	)
	wait := func() error {
		if writing == nil {
			return nil
		}
		err := <-writing
		writing = nil
		return err
	}
	err = c.from.Scan(ctx, c.opts.PageSize, func(page []esproxy.ScanHit) error {
		missing, present, err := c.compare(ctx, idsOf(page))
		if err != nil {
			return err
		}
		if pass == 1 {
			c.prog.add(&c.prog.skipped, resultSkipped, present)
		}
		built := c.embedAll(ctx, missing)
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := wait(); err != nil {
			return err
		}
		if len(built) > 0 {
			writing = make(chan error, 1)
			go func(done chan<- error) {
				k, err := c.write(ctx, built)
				n.Add(k)
				done <- err
			}(writing)
		}
		c.prog.scannedPage(len(page))
		return c.prog.tooManyErrors(c.opts.MaxErrors)
	})
	// Always wait: the write goroutine is ours.
	if werr := wait(); err == nil {
		err = werr
	}
	c.prog.endBackfill()
	return n.Load(), err
}

// compare reads the current version of the source documents ids (those
// deleted since the scan are gone) and of their copies in the target, and
// returns the source documents the target lacks and how many it holds as
// they are. A copy of another version (the document was deleted and
// ingested again under its id while no dual-write covered it: between an
// abort and a resume, or before a rollback) is deleted, guarded by its
// version, and counts as lacking.
func (c *copier) compare(ctx context.Context, ids []string) (missing []esproxy.StoredDoc, present int64, err error) {
	src, err := c.from.GetDocs(ctx, ids)
	if err != nil || len(src) == 0 {
		return nil, 0, err
	}
	dst, err := c.to.GetDocs(ctx, ids)
	if err != nil {
		return nil, 0, err
	}
	copies := make(map[string]esproxy.StoredDoc, len(dst))
	for _, d := range dst {
		copies[d.ID] = d
	}
	for _, s := range src {
		d, ok := copies[s.ID]
		switch {
		case !ok:
			missing = append(missing, s)
		case sameVersion(s.Doc, d.Doc):
			present++
		default:
			res, err := c.to.DeleteIfUnchanged(ctx, d.ID, d.SeqNo, d.PrimaryTerm)
			if err != nil {
				return nil, 0, err
			}
			if res == esproxy.Changed {
				continue // written again meanwhile (a dual-write): the next pass looks again
			}
			c.prog.add(&c.prog.deleted, resultDeleted, 1)
			missing = append(missing, s)
		}
	}
	return missing, present, nil
}

// sameVersion reports whether two copies of a document are of one ingest:
// the same bytes stored at the same time (an ingest sets created_at once
// for every generation it writes, and a backfill copies it).
func sameVersion(a, b esproxy.Doc) bool {
	return a.SHA256 == b.SHA256 && a.CreatedAt.Equal(b.CreatedAt)
}

// write creates docs in the target and returns how many it created.
func (c *copier) write(ctx context.Context, docs []esproxy.Doc) (created int64, err error) {
	// refresh=false: the next scan and verification refresh.
	items, err := c.to.Bulk(ctx, docs, esproxy.RefreshFalse)
	if err != nil {
		return 0, err
	}
	for _, it := range items {
		switch it.Result {
		case esproxy.Created:
			created++
		case esproxy.Exists:
			// A dual-write of a concurrent ingest got there first.
			c.prog.add(&c.prog.skipped, resultSkipped, 1)
		default:
			c.prog.fail(it.ID, errText(it.Err))
		}
	}
	c.prog.add(&c.prog.created, resultCreated, created)
	return created, nil
}

// embedAll embeds docs' originals with opts.Workers at once and returns
// the target documents of those that succeeded; the others are recorded as
// failed or missing.
func (c *copier) embedAll(ctx context.Context, docs []esproxy.StoredDoc) []esproxy.Doc {
	out := make([]*esproxy.Doc, len(docs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(c.opts.Workers, len(docs)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(docs) || ctx.Err() != nil {
					return
				}
				out[i] = c.embedOne(ctx, &docs[i].Doc)
			}
		})
	}
	wg.Wait()
	built := make([]esproxy.Doc, 0, len(docs))
	for _, d := range out {
		if d != nil {
			built = append(built, *d)
		}
	}
	return built
}

// embedOne builds the target document of src from its original: the
// target generation's vector, everything else (metadata, created_at, the
// image's facts) unchanged. nil when it failed (recorded), or ctx ended.
func (c *copier) embedOne(ctx context.Context, src *esproxy.Doc) (doc *esproxy.Doc) {
	defer func() {
		// An encoder bug must fail one document, not the gateway.
		if p := recover(); p != nil {
			c.prog.fail(src.ID, fmt.Sprintf("panic while re-embedding: %v", p))
			doc = nil
		}
	}()
	data, release, err := c.readOriginal(ctx, src)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		if apierr.KindOf(err) == apierr.NotFound {
			// Deleted since it was read (a delete removes the document,
			// then its original): nothing to copy, nothing missing.
			if found, ferr := c.from.Exists(ctx, []string{src.ID}); ferr == nil && len(found) == 0 {
				return nil
			}
			c.prog.missingOriginal(src.ID)
		} else {
			c.prog.fail(src.ID, errText(err))
		}
		return nil
	}
	defer release()
	var vec []float32
	err = whileOverloaded(ctx, func() (err error) {
		vec, _, err = c.images.Embed(ctx, data)
		return err
	})
	if err != nil {
		if ctx.Err() == nil {
			c.prog.fail(src.ID, errText(err))
		}
		return nil
	}
	return &esproxy.Doc{
		ID: src.ID, Vector: vec, ContentType: src.ContentType, Width: src.Width, Height: src.Height,
		Bytes: src.Bytes, SHA256: src.SHA256, Metadata: src.Metadata, CreatedAt: src.CreatedAt,
	}
}

// readOriginal reads the stored original of src, checked against the
// document's SHA-256: embedding some other bytes would file a wrong vector
// under a right id.
func (c *copier) readOriginal(ctx context.Context, src *esproxy.Doc) (data []byte, release func(), err error) {
	rc, size, err := c.originals.Open(ctx, src.ID)
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	limit := c.opts.MaxOriginalBytes
	if size > limit || size < 0 {
		return nil, nil, fmt.Errorf("the original is %d bytes, outside the %d-byte limit", size, limit)
	}
	held, err := c.reserve(ctx, size)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			held()
		}
	}()
	// Exactly the size the store reported: no growing buffer (twice the
	// bytes at worst), and a longer or shorter object is an error.
	data = make([]byte, size)
	if _, err := io.ReadFull(rc, data); err != nil {
		return nil, nil, fmt.Errorf("reading the original: %w", err)
	}
	if n, _ := rc.Read(make([]byte, 1)); n > 0 {
		return nil, nil, fmt.Errorf("the original is longer than the %d bytes its store reported", size)
	}
	if src.SHA256 != "" {
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != src.SHA256 {
			return nil, nil, fmt.Errorf("the stored original's sha256 %s differs from the document's %s", got[:12], short(src.SHA256))
		}
	}
	return data, held, nil
}

// reserve charges n bytes to the memory budget, waiting while live
// requests hold it: the backfill is the one that can wait.
func (c *copier) reserve(ctx context.Context, n int64) (release func(), err error) {
	b := c.opts.Budget
	if b == nil {
		return func() {}, nil
	}
	for wait := 10 * time.Millisecond; !b.TryAcquire(n); wait = min(2*wait, time.Second) {
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(wait):
		}
	}
	return func() { b.Release(n) }, nil
}

// whileOverloaded runs fn again while it fails with Overloaded (a full
// Triton queue or decode pool, the memory budget): live traffic has the
// capacity first, and a re-embedding that waits is not a failed document.
func whileOverloaded(ctx context.Context, fn func() error) error {
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		err := fn()
		if apierr.KindOf(err) != apierr.Overloaded {
			return err
		}
		if e := apierr.As(err); e != nil && e.RetryAfter > wait {
			wait = min(e.RetryAfter, 5*time.Second)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// reconcile deletes from the target the documents the source does not
// have (deleted while a pass copied them) and returns how many deletions
// it did or found raced (either way another pass must look again). Each
// delete is guarded by the version the scan saw, so a document written
// again since is kept.
func (c *copier) reconcile(ctx context.Context) (changed int64, err error) {
	c.state(StateReconciling)
	err = c.to.Scan(ctx, c.opts.PageSize, func(page []esproxy.ScanHit) error {
		present, err := c.from.Exists(ctx, idsOf(page))
		if err != nil {
			return err
		}
		have := setOf(present)
		for _, h := range page {
			if _, ok := have[h.ID]; ok {
				continue
			}
			res, err := c.to.DeleteIfUnchanged(ctx, h.ID, h.SeqNo, h.PrimaryTerm)
			if err != nil {
				return err
			}
			switch res {
			case esproxy.Deleted:
				changed++
				c.prog.add(&c.prog.deleted, resultDeleted, 1)
			case esproxy.Changed:
				changed++
			}
		}
		return nil
	})
	return changed, err
}

// verify checks the target is ready to be searched: nothing failed, the
// two indices hold as many documents, and queries answer.
//
// Under live traffic the exact counts may differ by the writes in flight
// (stored in the active generation, not yet in the next one), so when
// they differ the documents created more than settleWindow ago are
// compared instead: every one of those must be in both. Each attempt that
// fails either way reconciles again first.
func (c *copier) verify(ctx context.Context, fromName, toName string) error {
	c.state(StateVerifying)
	if err := c.prog.failures(); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		nFrom, err := c.from.Count(ctx)
		if err != nil {
			return err
		}
		nTo, err := c.to.Count(ctx)
		if err != nil {
			return err
		}
		if nFrom == nTo {
			c.log.Info("switch verification: counts equal", zap.Int64("documents", nTo))
			break
		}
		cutoff := time.Now().Add(-settleWindow)
		sFrom, err := c.from.CountCreatedBefore(ctx, cutoff)
		if err != nil {
			return err
		}
		sTo, err := c.to.CountCreatedBefore(ctx, cutoff)
		if err != nil {
			return err
		}
		if sFrom == sTo {
			c.log.Info("switch verification: counts differ only by recent writes in flight",
				zap.Int64("from", nFrom), zap.Int64("to", nTo), zap.Int64("settled", sTo), zap.Duration("window", settleWindow))
			break
		}
		if attempt == verifyAttempts {
			return apierr.New(apierr.Conflict, CodeVerifyFailed,
				"verification: generation %q has %d documents, %q has %d (%d and %d created before %s) after %d reconciliations: the alias stays on %q; rerun the switch",
				fromName, nFrom, toName, nTo, sFrom, sTo, cutoff.UTC().Format(time.RFC3339), attempt, fromName)
		}
		c.log.Info("switch verification: counts differ, reconciling again", zap.Int64("from", nFrom), zap.Int64("to", nTo),
			zap.Int64("settled_from", sFrom), zap.Int64("settled_to", sTo))
		if err := c.sync(ctx); err != nil {
			return err
		}
		c.state(StateVerifying)
		if err := c.prog.failures(); err != nil {
			return err
		}
	}
	return c.probe(ctx, toName)
}

// errStopScan ends a scan early.
var errStopScan = errors.New("stop scan")

// probe runs the queries users will run, on the target: a few stored
// documents must find themselves by their vector, and a text query must
// find something.
func (c *copier) probe(ctx context.Context, toName string) error {
	var ids []string
	err := c.to.Scan(ctx, probeDocs, func(page []esproxy.ScanHit) error {
		ids = idsOf(page)
		return errStopScan
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return err
	}
	if len(ids) == 0 {
		return nil // an empty generation: nothing to find
	}
	docs, err := c.to.GetDocs(ctx, ids)
	if err != nil {
		return err
	}
	sha := make(map[string]string, len(docs))
	for _, d := range docs {
		sha[d.ID] = d.SHA256
	}
	for _, id := range ids {
		vec, err := c.to.Vector(ctx, id)
		if e := apierr.As(err); e != nil && e.Code == esproxy.CodeVectorNotStored {
			// Vectors kept out of _source: embed the original again.
			doc := esproxy.Doc{ID: id}
			var data []byte
			var release func()
			if data, release, err = c.readOriginal(ctx, &doc); err == nil {
				err = whileOverloaded(ctx, func() (err error) {
					vec, _, err = c.images.Embed(ctx, data)
					return err
				})
				release()
			}
		}
		if err != nil {
			return fmt.Errorf("verification: the vector of document %q in %q: %w", id, toName, err)
		}
		hits, err := c.to.KNN(ctx, esproxy.KNNQuery{Vector: vec, K: probeK})
		if err != nil {
			return fmt.Errorf("verification: kNN search on %q: %w", toName, err)
		}
		// Found, or tied: the same image stored under more than probeK ids
		// (a placeholder picture) has identical vectors, and the index
		// returns some probeK of them, as near as the document itself.
		tied := len(hits) == probeK && sha[id] != "" &&
			!slices.ContainsFunc(hits, func(h esproxy.Hit) bool { return h.Doc.SHA256 != sha[id] })
		if !tied && !slices.ContainsFunc(hits, func(h esproxy.Hit) bool { return h.ID == id }) {
			return apierr.New(apierr.Conflict, CodeVerifyFailed,
				"verification: searching generation %q with the vector of document %q did not find it among %d hits", toName, id, len(hits))
		}
	}
	vec, err := c.texts.Embed(ctx, probeText)
	if err != nil {
		return fmt.Errorf("verification: embedding the text %q with generation %q: %w", probeText, toName, err)
	}
	hits, err := c.to.KNN(ctx, esproxy.KNNQuery{Vector: vec, K: 1})
	if err != nil {
		return fmt.Errorf("verification: text search on %q: %w", toName, err)
	}
	if len(hits) == 0 {
		return apierr.New(apierr.Conflict, CodeVerifyFailed, "verification: the text query %q found nothing in generation %q", probeText, toName)
	}
	return nil
}

// progress is the live state of one switch: counters read by Status while
// the job runs, and the ids that failed in the current pass (each pass
// re-examines every id the target lacks, so one that failed before and
// succeeds, or is deleted, no longer blocks the cut-over).
type progress struct {
	total, scanned, created, skipped, deleted atomic.Int64
	pass                                      atomic.Int64
	updated                                   atomic.Int64 // unix nanos

	mu          sync.Mutex
	failed      map[string]string // id → why
	missing     map[string]struct{}
	backfillAt  time.Time // first backfill pass started
	backfillEnd time.Time // last backfill pass ended

	m *switchMetrics
}

func newProgress(m *switchMetrics) *progress {
	p := &progress{failed: map[string]string{}, missing: map[string]struct{}{}, m: m}
	p.touch()
	return p
}

// Metric labels of tusou_models_switch_documents_total.
const (
	resultCreated = "created"
	resultSkipped = "skipped"
	resultDeleted = "deleted"
	resultFailed  = "failed"
	resultMissing = "missing_original"
)

func (p *progress) touch() { p.updated.Store(time.Now().UnixNano()) }

func (p *progress) add(c *atomic.Int64, result string, n int64) {
	if n == 0 {
		return
	}
	c.Add(n)
	p.m.documents.WithLabelValues(result).Add(float64(n))
	p.touch()
}

func (p *progress) startPass(pass int, total int64) {
	p.pass.Store(int64(pass))
	p.total.Store(total)
	p.scanned.Store(0)
	p.mu.Lock()
	clear(p.failed)
	clear(p.missing)
	if p.backfillAt.IsZero() {
		p.backfillAt = time.Now()
	}
	p.backfillEnd = time.Time{}
	p.mu.Unlock()
	p.ratio()
	p.touch()
}

func (p *progress) endBackfill() {
	p.mu.Lock()
	p.backfillEnd = time.Now()
	p.mu.Unlock()
}

func (p *progress) scannedPage(n int) {
	p.scanned.Add(int64(n))
	p.ratio()
	p.touch()
}

func (p *progress) ratio() {
	if t := p.total.Load(); t > 0 {
		p.m.progress.Set(min(float64(p.scanned.Load())/float64(t), 1))
	}
}

// docsPerSecond is the creation rate of the backfill so far.
func (p *progress) docsPerSecond() float64 {
	p.mu.Lock()
	start, end := p.backfillAt, p.backfillEnd
	p.mu.Unlock()
	if start.IsZero() {
		return 0
	}
	if end.IsZero() {
		end = time.Now()
	}
	if el := end.Sub(start).Seconds(); el > 0 {
		return float64(p.created.Load()) / el
	}
	return 0
}

func (p *progress) fail(id, why string) {
	p.mu.Lock()
	p.failed[id] = why
	p.mu.Unlock()
	p.m.documents.WithLabelValues(resultFailed).Inc()
	p.touch()
}

func (p *progress) missingOriginal(id string) {
	p.mu.Lock()
	p.missing[id] = struct{}{}
	p.mu.Unlock()
	p.m.documents.WithLabelValues(resultMissing).Inc()
	p.touch()
}

func (p *progress) failedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.failed)
}

func (p *progress) missingCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.missing)
}

// tooManyErrors stops a pass once more than max documents failed.
func (p *progress) tooManyErrors(max int) error {
	p.mu.Lock()
	n := len(p.failed) + len(p.missing)
	p.mu.Unlock()
	if n <= max {
		return nil
	}
	err := p.failures()
	return apierr.New(apierr.Conflict, CodeTooManyErrors, "stopped after more than %d documents (models.backfill.max_errors) could not be re-embedded: %s",
		max, apierr.As(err).Message)
}

// failures is the error that blocks a cut-over, nil when nothing failed.
func (p *progress) failures() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.failed) == 0 && len(p.missing) == 0 {
		return nil
	}
	var parts []string
	if n := len(p.failed); n > 0 {
		ids := sortedKeys(p.failed)
		ex := make([]string, 0, maxExamples)
		for _, id := range ids[:min(n, maxExamples)] {
			ex = append(ex, fmt.Sprintf("%q: %s", id, p.failed[id]))
		}
		parts = append(parts, fmt.Sprintf("%d documents could not be re-embedded (e.g. %s)", n, strings.Join(ex, "; ")))
	}
	if n := len(p.missing); n > 0 {
		ids := sortedKeys(p.missing)
		parts = append(parts, fmt.Sprintf("%d documents have no stored original (e.g. %s): re-ingest or delete them",
			n, strings.Join(quoteAll(ids[:min(n, maxExamples)]), ", ")))
	}
	return apierr.New(apierr.Conflict, CodeDocumentsFailed, "%s", strings.Join(parts, "; "))
}

func idsOf(page []esproxy.ScanHit) []string {
	ids := make([]string, len(page))
	for i, h := range page {
		ids[i] = h.ID
	}
	return ids
}

func setOf(ids []string) map[string]struct{} {
	s := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		s[id] = struct{}{}
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// errText is the public message of err (an *apierr.Error's Message).
func errText(err error) string {
	if err == nil {
		return "unknown error"
	}
	if e := apierr.As(err); e != nil {
		return e.Message
	}
	return err.Error()
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
