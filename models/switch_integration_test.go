//go:build integration

// Integration tests of the switch against the REAL local Elasticsearch
// (deploy/local/elasticsearch.sh up; TUSOU_ES_URL overrides the address).
// The encoders are deterministic stand-ins (the real-Triton switch is the
// gateway's end-to-end test); each test works under its own alias and
// deletes the indices it made.
package models

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/blobstore"
	"github.com/tusou/tusou/esproxy"
	ttu "github.com/tusou/tusou/internal/testutil"
	"github.com/tusou/tusou/preprocess"
)

const itDims = 32

func TestMain(m *testing.M) {
	deadline := time.Now().Add(90 * time.Second)
	for {
		res, err := http.Get(ttu.ESURL() + "/_cluster/health?wait_for_status=yellow&timeout=5s")
		if err == nil {
			_ = res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "elasticsearch at %s is not up (start it: make up): %v\n", ttu.ESURL(), err)
			os.Exit(1)
		}
		time.Sleep(time.Second)
	}
	os.Exit(m.Run())
}

// env is one test's world: an alias, generations a and b with stand-in
// encoders, their catalog, the originals and a switcher.
type env struct {
	t     *testing.T
	ctx   context.Context
	base  *esproxy.Client
	cat   *Catalog
	a, b  *Generation
	blobs *blobstore.Dir
	sw    *Switcher
	reg   *prometheus.Registry
	// gateB blocks b's image encoder (see gate).
	gateB *gate
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	cfg := esproxy.DefaultConfig()
	cfg.Addresses = []string{ttu.ESURL()}
	cfg.Index = fmt.Sprintf("tusou-it-models-%s-%x", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), time.Now().UnixNano()&0xffffffff)
	cfg.Dims = itDims
	cfg.Replicas = 0
	log := zaptest.NewLogger(t)
	reg := prometheus.NewRegistry()
	base, err := esproxy.New(cfg, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, base: base, reg: reg, gateB: &gate{}}
	e.a = NewGeneration("a", fakeImages{seed: "a"}, fakeTexts{seed: "a"},
		esproxy.Provenance{Model: "fake_image", Version: "1", Dims: itDims, Generation: "a", TextModel: "fake_text", TextVersion: "1",
			Fingerprint: fakeVector("a", "fingerprint", itDims)}, cfg.Index)
	e.b = NewGeneration("b", gatedImages{fakeImages{seed: "b"}, e.gateB}, fakeTexts{seed: "b"},
		esproxy.Provenance{Model: "fake_image", Version: "2", Dims: itDims, Generation: "b", TextModel: "fake_text", TextVersion: "2",
			Fingerprint: fakeVector("b", "fingerprint", itDims)}, cfg.Index)
	e.cat = NewCatalog(base, []*Generation{e.a, e.b}, CatalogOptions{PollInterval: time.Second, MaxStaleness: time.Minute}, log, reg)
	if e.blobs, err = blobstore.NewDir(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	e.sw = NewSwitcher(e.cat, e.blobs, SwitchOptions{Workers: 4, PageSize: 16, MaxErrors: 10, Propagation: 50 * time.Millisecond}, log, reg)
	t.Cleanup(func() {
		e.gateB.open()
		if err := e.sw.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		for _, g := range []*Generation{e.a, e.b} {
			if err := base.DeleteConcrete(ctx, g.Index()); err != nil && apierr.KindOf(err) != apierr.NotFound {
				t.Errorf("cleanup of %s: %v", g.Index(), err)
			}
		}
		e.cat.Close(ctx)
		_ = base.Close(ctx)
	})
	if err := e.cat.Start(ctx, "a"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return e
}

// image returns the bytes of test image n: unique, deterministic.
func image(n int) []byte { return []byte(fmt.Sprintf("image-bytes-%04d", n)) }

func imageID(n int) string { return fmt.Sprintf("img-%04d", n) }

// ingest stores images ns in the generations gs, one after the other (as
// the service's dual-write does), with their originals.
func (e *env) ingest(ns []int, gs ...*Generation) {
	e.t.Helper()
	for _, n := range ns {
		if err := e.blobs.Put(e.ctx, imageID(n), image(n)); err != nil {
			e.t.Fatal(err)
		}
	}
	for _, g := range gs {
		docs := make([]esproxy.Doc, len(ns))
		for i, n := range ns {
			data := image(n)
			vec, _, err := g.Images.(interface {
				raw() ImageEmbedder
			}).raw().Embed(e.ctx, data)
			if err != nil {
				e.t.Fatal(err)
			}
			docs[i] = esproxy.Doc{ID: imageID(n), Vector: vec, ContentType: "image/png", Width: 10 + n, Height: 20 + n,
				Bytes: int64(len(data)), SHA256: sha256Hex(data),
				Metadata:  map[string]any{"n": n, "tag": fmt.Sprintf("t%d", n%3), "nested": map[string]any{"k": "v"}},
				CreatedAt: time.Date(2026, 1, 1, 0, 0, n, 0, time.UTC)}
		}
		items, err := g.Store().Bulk(e.ctx, docs, esproxy.RefreshFalse)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, it := range items {
			if it.Err != nil {
				e.t.Fatalf("ingest %s into %s: %v", it.ID, g.Name, it.Err)
			}
		}
	}
}

// remove deletes image n from the generations gs and its original.
func (e *env) remove(n int, gs ...*Generation) {
	e.t.Helper()
	for _, g := range gs {
		if err := g.Store().Delete(e.ctx, imageID(n), esproxy.RefreshFalse); err != nil && apierr.KindOf(err) != apierr.NotFound {
			e.t.Fatal(err)
		}
	}
}

// docs returns every document of g by id (vectors left out).
func (e *env) docs(g *Generation) map[string]esproxy.Doc {
	e.t.Helper()
	out := map[string]esproxy.Doc{}
	err := g.Store().ScanIDs(e.ctx, 100, func(ids []string) error {
		docs, err := g.Store().GetDocs(e.ctx, ids)
		for _, d := range docs {
			out[d.ID] = d.Doc
		}
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// sameDocs checks b holds exactly a's documents with the same metadata and
// facts, and vectors from b's own encoder of each original.
func (e *env) sameDocs(from, to *Generation) {
	e.t.Helper()
	if err := to.Store().Refresh(e.ctx); err != nil {
		e.t.Fatal(err)
	}
	da, db := e.docs(from), e.docs(to)
	if len(da) != len(db) {
		e.t.Errorf("%s has %d documents, %s has %d (%v vs %v)", from.Name, len(da), to.Name, len(db), sortedKeys(da), sortedKeys(db))
	}
	for id, a := range da {
		b, ok := db[id]
		if !ok {
			e.t.Errorf("%s lacks %s", to.Name, id)
			continue
		}
		if a.ModelVersion == b.ModelVersion {
			e.t.Errorf("%s: both documents say model version %s", id, a.ModelVersion)
		}
		a.Model, a.ModelVersion, b.Model, b.ModelVersion = "", "", "", ""
		if !reflect.DeepEqual(a, b) {
			e.t.Errorf("%s differs:\n%s: %+v\n%s: %+v", id, from.Name, a, to.Name, b)
		}
	}
	for id := range db {
		if _, ok := da[id]; !ok {
			e.t.Errorf("%s has %s, which %s does not", to.Name, id, from.Name)
		}
	}
	// Vectors: the target generation's own embedding of the original.
	var n int
	for id := range db {
		if n++; n > 10 {
			break
		}
		var k int
		fmt.Sscanf(id, "img-%d", &k)
		got, err := to.Store().Vector(e.ctx, id)
		if err != nil {
			e.t.Fatal(err)
		}
		want := fakeVector(seedOf(to), string(image(k)), itDims)
		if c := ttu.Cosine(got, want); c < 0.9999 {
			e.t.Errorf("%s in %s: cosine %.6f to %s's embedding of its original", id, to.Name, c, to.Name)
		}
	}
}

func seedOf(g *Generation) string {
	return g.Images.(interface{ raw() ImageEmbedder }).raw().(fakeImages).seed
}

// wait polls the status until the switch stops running.
func (e *env) wait() *Status {
	e.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := e.sw.Status(e.ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		if st.Switch != nil && !st.Switch.Running {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("switch still running: %+v", st.Switch)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// aliases returns the concrete index behind each of the three aliases.
func (e *env) aliases() (active, next, prev string) {
	e.t.Helper()
	al := e.cat.Alias()
	tg, err := e.base.AliasTargets(e.ctx, al, al+NextSuffix, al+PreviousSuffix)
	if err != nil {
		e.t.Fatal(err)
	}
	one := func(a string) string {
		if len(tg[a]) > 1 {
			e.t.Fatalf("%s points at %v", a, tg[a])
		}
		if len(tg[a]) == 1 {
			return tg[a][0]
		}
		return ""
	}
	return one(al), one(al + NextSuffix), one(al + PreviousSuffix)
}

func (e *env) wantAliases(active, next, prev string) {
	e.t.Helper()
	a, n, p := e.aliases()
	if a != active || n != next || p != prev {
		e.t.Fatalf("aliases active=%q next=%q previous=%q, want %q %q %q", a, n, p, active, next, prev)
	}
}

func wantCode(t *testing.T, err error, kind apierr.Kind, code string) {
	t.Helper()
	e := apierr.As(err)
	if e == nil || e.Kind != kind || e.Code != code {
		t.Fatalf("want %s %s, got %v", kind, code, err)
	}
}

func rangeInts(from, to int) []int {
	var ns []int
	for i := from; i < to; i++ {
		ns = append(ns, i)
	}
	return ns
}

// TestSwitchRollbackPruneIntegration: 50 documents in a; a switch to b with
// dual-writes and a delete while it backfills; b equals a, aliases moved;
// a second switch is a no-op; rollback to a after writes to b only; prune.
func TestSwitchRollbackPruneIntegration(t *testing.T) {
	e := newEnv(t)
	e.ingest(rangeInts(0, 50), e.a)

	if _, _, err := e.sw.Switch(e.ctx, "nope"); err == nil {
		t.Fatal("switch to an unknown generation started")
	} else {
		wantCode(t, err, apierr.NotFound, CodeUnknownGeneration)
	}
	if _, _, err := e.sw.Rollback(e.ctx); err == nil {
		t.Fatal("rollback without a previous generation started")
	} else {
		wantCode(t, err, apierr.Conflict, CodeNoPrevious)
	}
	st0, err := e.sw.Status(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if *st0.Active != "a" || st0.Next != nil || st0.Switch != nil || st0.Generations[0].Documents != 50 || st0.Generations[1].Documents != -1 ||
		st0.Generations[1].Role != string(RoleUnused) || st0.Generations[0].Fingerprint == "" || st0.Generations[0].Fingerprint == st0.Generations[1].Fingerprint {
		t.Fatalf("status before the switch: %+v", st0)
	}

	// Hold b's encoder after 20 documents: the switch is mid-backfill.
	e.gateB.set(20)
	sw, started, err := e.sw.Switch(e.ctx, "b")
	if err != nil || !started || sw.To != "b" || sw.From != "a" || !sw.Running {
		t.Fatalf("Switch: %+v started=%v err=%v", sw, started, err)
	}
	e.gateB.waitHeld(t)
	st, err := e.sw.Status(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Switch == nil || st.Switch.State != StateBackfilling || !st.Switch.Running || *st.Next != "b" || st.Generations[1].Role != string(RoleNext) {
		t.Fatalf("status mid-switch: %+v %+v", st, st.Switch)
	}
	if _, _, err := e.sw.Switch(e.ctx, "a"); err == nil {
		t.Fatal("a switch to another generation started while one runs")
	} else {
		wantCode(t, err, apierr.Conflict, CodeSwitchInProgress)
	}
	if again, started, err := e.sw.Switch(e.ctx, "b"); err != nil || started || !again.Running {
		t.Fatalf("second Switch to b: %+v started=%v err=%v", again, started, err)
	}
	if _, err := e.sw.Prune(e.ctx, "b"); err == nil {
		t.Fatal("pruned the generation being filled")
	} else {
		wantCode(t, err, apierr.Conflict, CodeGenerationInUse)
	}
	// The gateway's dual-write while the backfill runs: new images to both,
	// one deletion from both.
	e.ingest(rangeInts(100, 105), e.a, e.b)
	e.remove(3, e.a, e.b)
	e.remove(45, e.a, e.b)
	e.gateB.open()

	st = e.wait()
	if st.Switch.State != StateDone || st.Switch.Error != nil {
		t.Fatalf("switch ended %s: %v", st.Switch.State, deref(st.Switch.Error))
	}
	e.wantAliases(e.b.Index(), "", e.a.Index())
	if *st.Active != "b" || *st.Previous != "a" || st.Next != nil {
		t.Fatalf("status after the switch: %+v", st)
	}
	e.sameDocs(e.a, e.b)
	if st.Switch.Created < 40 || st.Switch.Failed != 0 || st.Switch.MissingOriginals != 0 || st.Switch.FinishedAt == nil || st.Switch.DocsPerSecond <= 0 {
		t.Fatalf("switch counters: %+v", st.Switch)
	}
	if got := metricValue(e.sw.m.switches.WithLabelValues(StateDone)); got != 1 {
		t.Fatalf("tusou_models_switches_total{outcome=done} = %v", got)
	}
	if got := metricValue(e.sw.m.running); got != 0 {
		t.Fatalf("tusou_models_switch_running = %v after the switch", got)
	}
	if v := e.cat.View(); v.Active != e.b || v.Next != nil || v.Previous != e.a {
		t.Fatalf("catalog view after the switch: %+v", v)
	}

	// A second switch to b: nothing to do.
	noop, started, err := e.sw.Switch(e.ctx, "b")
	if err != nil || started || !noop.Noop || noop.State != StateDone || noop.Running {
		t.Fatalf("second switch: %+v started=%v err=%v", noop, started, err)
	}
	e.wantAliases(e.b.Index(), "", e.a.Index())

	// Writes to b alone (a is previous, not written) and a deletion from b;
	// rollback brings a level again, embedding with a's encoder.
	e.ingest(rangeInts(200, 203), e.b)
	e.remove(10, e.b)
	if _, err := e.sw.Prune(e.ctx, "b"); err == nil {
		t.Fatal("pruned the active generation")
	} else {
		wantCode(t, err, apierr.Conflict, CodeGenerationInUse)
	}
	rb, started, err := e.sw.Rollback(e.ctx)
	if err != nil || !started || rb.To != "a" {
		t.Fatalf("Rollback: %+v %v %v", rb, started, err)
	}
	st = e.wait()
	if st.Switch.State != StateDone || st.Switch.Created != 3 || st.Switch.Deleted != 1 {
		t.Fatalf("rollback: %+v %v", st.Switch, deref(st.Switch.Error))
	}
	e.wantAliases(e.a.Index(), "", e.b.Index())
	e.sameDocs(e.b, e.a)

	// Prune the previous generation (b): its index and alias go.
	pr, err := e.sw.Prune(e.ctx, "")
	if err != nil || pr.Generation != "b" || pr.DeletedIndex != e.b.Index() {
		t.Fatalf("Prune: %+v %v", pr, err)
	}
	e.wantAliases(e.a.Index(), "", "")
	st, err = e.sw.Status(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Previous != nil || st.Generations[1].Documents != -1 || st.Generations[1].Role != string(RoleUnused) {
		t.Fatalf("status after prune: %+v", st)
	}
	if _, err := e.sw.Prune(e.ctx, "b"); err == nil {
		t.Fatal("pruned b twice")
	} else {
		wantCode(t, err, apierr.NotFound, CodeNoIndex)
	}
}

// TestSwitchAbortResumeIntegration: a switch aborted mid-way keeps b's
// index and removes the next alias; a document deleted from a meanwhile
// (no dual-write then) is reconciled away; the rerun resumes, skipping
// what is there, and ends with b equal to a.
func TestSwitchAbortResumeIntegration(t *testing.T) {
	e := newEnv(t)
	e.ingest(rangeInts(0, 50), e.a)

	e.gateB.set(20)
	if _, started, err := e.sw.Switch(e.ctx, "b"); err != nil || !started {
		t.Fatalf("Switch: %v %v", started, err)
	}
	e.gateB.waitHeld(t)
	st, err := e.sw.Abort(e.ctx)
	if err != nil {
		t.Fatalf("Abort: %v", err)
	}
	if st.Switch == nil || st.Switch.State != StateAborted || st.Switch.Running || st.Next != nil {
		t.Fatalf("status after abort: %+v %+v", st, st.Switch)
	}
	if got := metricValue(e.sw.m.switches.WithLabelValues(StateAborted)); got != 1 {
		t.Fatalf("tusou_models_switches_total{outcome=aborted} = %v", got)
	}
	e.wantAliases(e.a.Index(), "", "")
	e.gateB.open()
	present := e.docs(e.b)
	if len(present) == 0 || len(present) >= 50 {
		t.Fatalf("b holds %d documents after the abort; want some", len(present))
	}
	// Deleted from a while no switch runs: b keeps it until reconciled.
	var gone string
	for id := range present {
		gone = id
		break
	}
	var n int
	fmt.Sscanf(gone, "img-%d", &n)
	e.remove(n, e.a)

	if _, started, err := e.sw.Switch(e.ctx, "b"); err != nil || !started {
		t.Fatalf("resume: %v %v", started, err)
	}
	st = e.wait()
	if st.Switch.State != StateDone {
		t.Fatalf("resumed switch ended %s: %v", st.Switch.State, deref(st.Switch.Error))
	}
	if st.Switch.Skipped != int64(len(present)-1) || st.Switch.Created != int64(49-(len(present)-1)) || st.Switch.Deleted != 1 {
		t.Fatalf("resume counters: %+v (present after abort: %d)", st.Switch, len(present))
	}
	e.wantAliases(e.b.Index(), "", e.a.Index())
	e.sameDocs(e.a, e.b)
}

// TestSwitchMissingOriginalIntegration: a document without its original
// blocks the cut-over, naming it; once deleted, the rerun completes.
func TestSwitchMissingOriginalIntegration(t *testing.T) {
	e := newEnv(t)
	e.ingest(rangeInts(0, 10), e.a)
	// No blob store at all: refused up front, nothing created.
	none := NewSwitcher(e.cat, nil, SwitchOptions{}, nil, nil)
	if _, _, err := none.Switch(e.ctx, "b"); err == nil {
		t.Fatal("a switch without originals started")
	} else {
		wantCode(t, err, apierr.Conflict, CodeNoOriginals)
	}
	e.wantAliases(e.a.Index(), "", "")
	if err := e.blobs.Delete(e.ctx, imageID(7)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.sw.Switch(e.ctx, "b"); err != nil {
		t.Fatal(err)
	}
	st := e.wait()
	if st.Switch.State != StateFailed || st.Switch.MissingOriginals != 1 || st.Switch.Error == nil ||
		!strings.Contains(*st.Switch.Error, imageID(7)) {
		t.Fatalf("switch with a missing original: %+v %v", st.Switch, deref(st.Switch.Error))
	}
	// The next alias stays (dual-writes go on), the alias does not move.
	e.wantAliases(e.a.Index(), e.b.Index(), "")
	if st.Switch.State != StateFailed || *st.Next != "b" {
		t.Fatalf("status after the failure: %+v", st)
	}
	e.remove(7, e.a, e.b)
	if _, started, err := e.sw.Switch(e.ctx, "b"); err != nil || !started {
		t.Fatalf("rerun: %v %v", started, err)
	}
	st = e.wait()
	if st.Switch.State != StateDone || st.Switch.Skipped != 9 || st.Switch.Created != 0 {
		t.Fatalf("rerun: %+v %v", st.Switch, deref(st.Switch.Error))
	}
	e.sameDocs(e.a, e.b)
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// gate blocks an encoder once it has embedded n images, until opened.
type gate struct {
	mu      sync.Mutex
	n       int
	calls   int
	held    chan struct{}
	release chan struct{}
}

func (g *gate) set(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n, g.calls = n, 0
	g.held, g.release = make(chan struct{}), make(chan struct{})
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.release != nil {
		select {
		case <-g.release:
		default:
			close(g.release)
		}
	}
}

func (g *gate) pass(ctx context.Context) error {
	g.mu.Lock()
	if g.release == nil {
		g.mu.Unlock()
		return nil
	}
	g.calls++
	if g.calls == g.n {
		close(g.held)
	}
	wait := g.calls >= g.n
	release := g.release
	g.mu.Unlock()
	if !wait {
		return nil
	}
	select {
	case <-release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gate) waitHeld(t *testing.T) {
	t.Helper()
	select {
	case <-g.held:
	case <-time.After(time.Minute):
		t.Fatal("the encoder was never reached")
	}
}

type gatedImages struct {
	fakeImages
	g *gate
}

func (i gatedImages) raw() ImageEmbedder { return i.fakeImages }

func (i gatedImages) Embed(ctx context.Context, data []byte) ([]float32, preprocess.Info, error) {
	if err := i.g.pass(ctx); err != nil {
		return nil, preprocess.Info{}, err
	}
	return i.fakeImages.Embed(ctx, data)
}
