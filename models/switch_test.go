package models

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/preprocess"
)

const unitDims = 8

// world is a copier from one memStore to another, over originals in a map.
type world struct {
	from, to  *memStore
	originals *memOriginals
	images    ImageEmbedder
	c         *copier
	states    []string
	m         *switchMetrics
}

// newWorld puts n documents in the source (vectors of model "a") with their
// originals.
func newWorld(t *testing.T, n int, opts SwitchOptions) *world {
	t.Helper()
	w := &world{from: newMemStore(unitDims), to: newMemStore(unitDims), originals: &memOriginals{m: map[string][]byte{}},
		images: fakeImages{seed: "b", dims: unitDims}, m: newSwitchMetrics(prometheus.NewRegistry())}
	for i := range n {
		w.add(i, w.from, "a")
	}
	w.c = &copier{from: w.from, to: w.to, images: w.images, texts: fakeTexts{seed: "b", dims: unitDims}, originals: w.originals,
		opts: opts.withDefaults(), prog: newProgress(w.m), state: func(s string) { w.states = append(w.states, s) }, log: zap.NewNop()}
	return w
}

func data(i int) []byte { return []byte(fmt.Sprintf("image-%d", i)) }

func docID(i int) string { return fmt.Sprintf("doc-%03d", i) }

// add stores document i in s embedded by model seed, and its original.
func (w *world) add(i int, s *memStore, seed string) {
	w.originals.mu.Lock()
	w.originals.m[docID(i)] = data(i)
	w.originals.mu.Unlock()
	s.put(esproxy.Doc{ID: docID(i), Vector: fakeVector(seed, string(data(i)), unitDims), ContentType: "image/jpeg",
		Width: i + 1, Height: 2*i + 1, Bytes: int64(len(data(i))), SHA256: sha256Hex(data(i)),
		Metadata: map[string]any{"i": i, "tag": "x"}, CreatedAt: time.Date(2026, 1, 2, 3, 4, i, 0, time.UTC)})
}

// checkEqual asserts the target holds the source's documents, each with
// the target model's vector of its original.
func (w *world) checkEqual(t *testing.T) {
	t.Helper()
	if a, b := w.from.ids(), w.to.ids(); !reflect.DeepEqual(a, b) {
		t.Fatalf("ids differ:\nfrom %v\nto   %v", a, b)
	}
	for _, id := range w.from.ids() {
		a, _ := w.from.get(id)
		b, _ := w.to.get(id)
		if !reflect.DeepEqual(a.doc, b.doc) {
			t.Errorf("%s: %+v != %+v", id, a.doc, b.doc)
		}
		var i int
		fmt.Sscanf(id, "doc-%d", &i)
		if want := fakeVector("b", string(data(i)), unitDims); !reflect.DeepEqual(b.vec, want) {
			t.Errorf("%s: target vector is not the target model's embedding of the original", id)
		}
	}
}

func TestCopierFillsAndReconciles(t *testing.T) {
	w := newWorld(t, 30, SwitchOptions{PageSize: 7, Workers: 3})
	// An earlier, interrupted run left 5 documents; 2 others were deleted
	// from the source since.
	for i := range 5 {
		w.add(i, w.to, "b")
	}
	w.add(90, w.to, "b")
	w.add(91, w.to, "b")
	if err := w.c.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.checkEqual(t)
	p := w.c.prog
	if p.created.Load() != 25 || p.skipped.Load() != 5 || p.deleted.Load() != 2 || p.failedCount() != 0 || p.missingCount() != 0 {
		t.Fatalf("created %d skipped %d deleted %d failed %d missing %d", p.created.Load(), p.skipped.Load(), p.deleted.Load(), p.failedCount(), p.missingCount())
	}
	if p.total.Load() != 30 || p.scanned.Load() != 30 {
		t.Fatalf("total %d scanned %d", p.total.Load(), p.scanned.Load())
	}
	// Pass 1 changed things, pass 2 found nothing: two rounds.
	want := []string{StateBackfilling, StateReconciling, StateBackfilling, StateReconciling}
	if !reflect.DeepEqual(w.states, want) {
		t.Fatalf("states %v, want %v", w.states, want)
	}
	if got := metricValue(w.m.documents.WithLabelValues(resultCreated)); got != 25 {
		t.Fatalf("documents_total{created} = %v", got)
	}
	if got := metricValue(w.m.progress); got != 1 {
		t.Fatalf("progress_ratio = %v", got)
	}
	if err := w.c.verify(context.Background(), "a", "b"); err != nil {
		t.Fatalf("verify: %v", err)
	}
}

func TestCopierRecordsMissingAndFailedDocuments(t *testing.T) {
	w := newWorld(t, 12, SwitchOptions{PageSize: 5})
	delete(w.originals.m, docID(3))                 // no original
	w.originals.m[docID(4)] = []byte("other bytes") // not the indexed image
	w.c.images = &failingImages{fakeImages: fakeImages{seed: "b", dims: unitDims}, fail: map[string]int{string(data(5)): -1}}
	if err := w.c.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	p := w.c.prog
	if p.missingCount() != 1 || p.failedCount() != 2 || p.created.Load() != 9 {
		t.Fatalf("missing %d failed %d created %d", p.missingCount(), p.failedCount(), p.created.Load())
	}
	err := w.c.verify(context.Background(), "a", "b")
	e := apierr.As(err)
	if e == nil || e.Code != CodeDocumentsFailed {
		t.Fatalf("verify: %v", err)
	}
	for _, want := range []string{`2 documents could not be re-embedded`, docID(4), "sha256", docID(5), "corrupt",
		`1 documents have no stored original`, docID(3)} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("message lacks %q: %s", want, e.Message)
		}
	}
	if got := metricValue(w.m.documents.WithLabelValues(resultMissing)); got < 1 {
		t.Fatalf("documents_total{missing_original} = %v", got)
	}
	// Fixed (original restored, the other deleted, the encoder well): a
	// rerun forgives them.
	w.originals.m[docID(3)] = data(3)
	w.originals.m[docID(4)] = data(4)
	w.from.del(docID(5))
	w.c.images = w.images
	if err := w.c.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := w.c.verify(context.Background(), "a", "b"); err != nil {
		t.Fatalf("verify after the fix: %v", err)
	}
	w.checkEqual(t)
}

func TestCopierRetriesATransientFailure(t *testing.T) {
	w := newWorld(t, 6, SwitchOptions{PageSize: 4})
	w.c.images = &failingImages{fakeImages: fakeImages{seed: "b", dims: unitDims}, fail: map[string]int{string(data(2)): 1}}
	if err := w.c.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Pass 1 created 5 and failed one; pass 2 created it.
	if p := w.c.prog; p.failedCount() != 0 || p.created.Load() != 6 {
		t.Fatalf("failed %d created %d", p.failedCount(), p.created.Load())
	}
	w.checkEqual(t)
}

func TestCopierStopsAfterMaxErrors(t *testing.T) {
	w := newWorld(t, 40, SwitchOptions{PageSize: 5, MaxErrors: 2})
	w.originals.m = map[string][]byte{}
	err := w.c.sync(context.Background())
	if e := apierr.As(err); e == nil || e.Code != CodeTooManyErrors || !strings.Contains(e.Message, "max_errors") {
		t.Fatalf("want %s, got %v", CodeTooManyErrors, err)
	}
	if s := w.c.prog.scanned.Load(); s >= 40 {
		t.Fatalf("scanned %d of 40: it did not stop early", s)
	}
}

func TestCopierDualWriteFirstIsSkipped(t *testing.T) {
	w := newWorld(t, 10, SwitchOptions{PageSize: 10})
	// A gateway's dual-write stores doc 4 in the target between the
	// switch's comparison and its write.
	var once atomic.Bool
	w.to.afterExists = func([]string) {
		if once.CompareAndSwap(false, true) {
			w.add(4, w.to, "b")
		}
	}
	if err := w.c.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := w.c.prog; p.created.Load() != 9 || p.skipped.Load() != 1 || p.failedCount() != 0 {
		t.Fatalf("created %d skipped %d failed %d", p.created.Load(), p.skipped.Load(), p.failedCount())
	}
	w.checkEqual(t)
}

func TestReconcileKeepsADocumentWrittenAgain(t *testing.T) {
	w := newWorld(t, 5, SwitchOptions{PageSize: 10})
	w.add(7, w.to, "b") // deleted from the source, left in the target
	// While reconcile decides, the image is ingested again (dual-write:
	// source, then target after a delete): a new version that must stay.
	var once atomic.Bool
	w.from.afterExists = func(ids []string) {
		if once.CompareAndSwap(false, true) {
			w.add(7, w.from, "a")
			w.to.del(docID(7))
			w.add(7, w.to, "b")
		}
	}
	changed, err := w.c.reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := w.to.get(docID(7)); !ok || changed != 1 || w.c.prog.deleted.Load() != 0 {
		t.Fatalf("the re-written document was deleted (changed %d, deleted %d)", changed, w.c.prog.deleted.Load())
	}
}

func TestVerifyToleratesWritesInFlight(t *testing.T) {
	w := newWorld(t, 8, SwitchOptions{})
	if err := w.c.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Stored in the source just now, not yet in the target: in flight.
	w.from.put(esproxy.Doc{ID: "fresh", Vector: fakeVector("a", "fresh", unitDims)})
	w.originals.m["fresh"] = []byte("fresh")
	if err := w.c.verify(context.Background(), "a", "b"); err != nil {
		t.Fatalf("verify with a write in flight: %v", err)
	}
}

func TestVerifyFailsWhenTheTargetCannotBeSearched(t *testing.T) {
	w := newWorld(t, 4, SwitchOptions{})
	if err := w.c.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.to.knnBroken = true
	err := w.c.verify(context.Background(), "a", "b")
	if e := apierr.As(err); e == nil || e.Code != CodeVerifyFailed || !strings.Contains(e.Message, `generation "b"`) {
		t.Fatalf("want %s, got %v", CodeVerifyFailed, err)
	}
}

func TestVerifyFailsOnAnOldDocumentMissing(t *testing.T) {
	w := newWorld(t, 4, SwitchOptions{})
	if err := w.c.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	// An old document appears in the source without any original: every
	// reconciliation fails on it.
	w.from.put(esproxy.Doc{ID: "old", Vector: fakeVector("a", "old", unitDims), CreatedAt: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)})
	err := w.c.verify(context.Background(), "a", "b")
	if e := apierr.As(err); e == nil || e.Code != CodeDocumentsFailed || !strings.Contains(e.Message, `"old"`) {
		t.Fatalf("want %s naming old, got %v", CodeDocumentsFailed, err)
	}
}

func TestEmbedOneRefusesOversizedOriginals(t *testing.T) {
	w := newWorld(t, 1, SwitchOptions{MaxOriginalBytes: 3})
	if err := w.c.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := w.c.prog.failures(); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("want the size limit named, got %v", err)
	}
}

func TestCopierStopsWhenCanceled(t *testing.T) {
	w := newWorld(t, 20, SwitchOptions{PageSize: 5})
	ctx, cancel := context.WithCancel(context.Background())
	w.to.afterExists = func([]string) { cancel() }
	if err := w.c.sync(ctx); err == nil {
		t.Fatal("sync went on after cancel")
	}
	if p := w.c.prog; p.failedCount() != 0 || p.missingCount() != 0 {
		t.Fatalf("a cancel counted documents as failed: %d %d", p.failedCount(), p.missingCount())
	}
}

func TestCopierFailsWhenTheTargetRefusesWrites(t *testing.T) {
	w := newWorld(t, 30, SwitchOptions{PageSize: 4})
	w.to.bulkErr = apierr.New(apierr.Unavailable, esproxy.CodeUnavailable, "elasticsearch is unreachable")
	err := w.c.sync(context.Background())
	if apierr.KindOf(err) != apierr.Unavailable {
		t.Fatalf("want the write error, got %v", err)
	}
	// It stopped at the first failed write (one page ahead at most), and
	// the documents are not blamed.
	if s := w.c.prog.scanned.Load(); s > 8 || w.c.prog.failedCount() != 0 {
		t.Fatalf("scanned %d, failed %d", s, w.c.prog.failedCount())
	}
}

func TestSwitchOptionsDefaults(t *testing.T) {
	o := SwitchOptions{PageSize: 5000}.withDefaults()
	d := DefaultSwitchOptions()
	if o.Workers != d.Workers || o.PageSize != esproxy.MaxExistsIDs || o.MaxErrors != d.MaxErrors || o.Propagation != d.Propagation || o.MaxOriginalBytes != d.MaxOriginalBytes {
		t.Fatalf("%+v", o)
	}
}

func TestFingerprintHash(t *testing.T) {
	a, b := fakeVector("a", "fp", 16), fakeVector("b", "fp", 16)
	ha := FingerprintHash(a)
	if len(ha) != 8 || ha != FingerprintHash(append([]float32(nil), a...)) || ha == FingerprintHash(b) || FingerprintHash(nil) != "" {
		t.Fatalf("hashes %q %q", ha, FingerprintHash(b))
	}
}

// overloadedImages answers Overloaded (a full Triton queue, the memory
// budget) a number of times per input before embedding.
type overloadedImages struct {
	fakeImages
	mu   sync.Mutex
	left map[string]int
}

func (f *overloadedImages) Embed(ctx context.Context, data []byte) ([]float32, preprocess.Info, error) {
	f.mu.Lock()
	if f.left[string(data)] > 0 {
		f.left[string(data)]--
		f.mu.Unlock()
		return nil, preprocess.Info{}, apierr.New(apierr.Overloaded, "queue_full", "busy").WithRetryAfter(time.Millisecond)
	}
	f.mu.Unlock()
	return f.fakeImages.Embed(ctx, data)
}

// An overloaded encoder is waited for, not counted as a failed document:
// live traffic goes first, the backfill carries on after.
func TestCopierWaitsOutOverload(t *testing.T) {
	w := newWorld(t, 5, SwitchOptions{})
	w.c.images = &overloadedImages{fakeImages: fakeImages{seed: "b", dims: unitDims}, left: map[string]int{string(data(1)): 3, string(data(3)): 1}}
	if err := w.c.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := w.c.prog; p.failedCount() != 0 || p.created.Load() != 5 {
		t.Fatalf("failed %d created %d", p.failedCount(), p.created.Load())
	}
	w.checkEqual(t)
}

// budget refuses a number of acquisitions, then grants them; it records
// the most held at once.
type budget struct {
	mu               sync.Mutex
	refuse           int
	held, max, asked int64
}

func (b *budget) TryAcquire(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.asked++
	if b.refuse > 0 {
		b.refuse--
		return false
	}
	b.held += n
	b.max = max(b.max, b.held)
	return true
}

func (b *budget) Release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held -= n
}

// The originals being re-embedded are charged to the memory budget, and
// the backfill waits while it is full.
func TestCopierChargesOriginalsToTheBudget(t *testing.T) {
	b := &budget{refuse: 3}
	w := newWorld(t, 8, SwitchOptions{Workers: 2, Budget: b})
	if err := w.c.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := w.c.prog; p.failedCount() != 0 || p.created.Load() != 8 {
		t.Fatalf("failed %d created %d", p.failedCount(), p.created.Load())
	}
	if b.held != 0 || b.max == 0 || b.max > 2*int64(len(data(7))) || b.asked < 8+3 {
		t.Fatalf("budget: held %d after, at most %d at once (2 workers × %d bytes), %d asks", b.held, b.max, len(data(7)), b.asked)
	}
	w.checkEqual(t)
}

// A copy of another version in the target (the image was deleted and
// ingested again under its id, with other bytes, while nothing dual-wrote:
// between an abort and a resume, or before a rollback) is replaced by the
// current one.
func TestCopierReplacesACopyOfAnotherVersion(t *testing.T) {
	w := newWorld(t, 4, SwitchOptions{PageSize: 10})
	if err := w.c.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Deleted and ingested again in the source only, with new bytes.
	w.from.del(docID(2))
	newBytes := []byte("image-2, edited")
	w.originals.mu.Lock()
	w.originals.m[docID(2)] = newBytes
	w.originals.mu.Unlock()
	w.from.put(esproxy.Doc{ID: docID(2), Vector: fakeVector("a", string(newBytes), unitDims), ContentType: "image/jpeg",
		Width: 9, Height: 9, Bytes: int64(len(newBytes)), SHA256: sha256Hex(newBytes),
		Metadata: map[string]any{"tag": "edited"}, CreatedAt: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)})
	w.c.prog = newProgress(w.m)
	if err := w.c.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := w.to.get(docID(2))
	if got.doc.SHA256 != sha256Hex(newBytes) || got.doc.Metadata["tag"] != "edited" ||
		!reflect.DeepEqual(got.vec, fakeVector("b", string(newBytes), unitDims)) {
		t.Fatalf("the target keeps the old version: %+v", got.doc)
	}
	if p := w.c.prog; p.created.Load() != 1 || p.deleted.Load() != 1 || p.skipped.Load() != 3 {
		t.Fatalf("created %d deleted %d skipped %d", p.created.Load(), p.deleted.Load(), p.skipped.Load())
	}
}

// A document deleted while the backfill copies it (its original goes last)
// is not a missing original: there is nothing to copy.
func TestCopierIgnoresADocumentDeletedWhileCopied(t *testing.T) {
	w := newWorld(t, 3, SwitchOptions{PageSize: 10})
	w.originals.mu.Lock()
	delete(w.originals.m, docID(1)) // the delete has removed the original...
	w.originals.mu.Unlock()
	var once atomic.Bool
	w.to.afterExists = func([]string) { // ...and the document, after the comparison
		if once.CompareAndSwap(false, true) {
			w.from.del(docID(1))
		}
	}
	if err := w.c.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := w.c.prog; p.missingCount() != 0 || p.failedCount() != 0 || p.created.Load() != 2 {
		t.Fatalf("missing %d failed %d created %d", p.missingCount(), p.failedCount(), p.created.Load())
	}
	if err := w.c.prog.failures(); err != nil {
		t.Fatalf("the switch would fail: %v", err)
	}
}
