//go:build integration

package models

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/esproxy"
	ttu "github.com/tusou/tusou/internal/testutil"
)

// A gateway that cannot re-read the aliases refuses writes (it might miss a
// switch and write to one generation only) but keeps serving searches.
func TestCatalogStaleViewRefusesWritesOnly(t *testing.T) {
	e := newEnv(t)
	e.cat.opts.MaxStaleness = 50 * time.Millisecond
	if _, _, err := e.cat.Writers(); err != nil {
		t.Fatalf("fresh view: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	_, _, err := e.cat.Writers()
	wantCode(t, err, apierr.Unavailable, CodeStale)
	if e := apierr.As(err); e.RetryAfter <= 0 {
		t.Fatalf("no Retry-After on %v", err)
	}
	if g, err := e.cat.Reader(); err != nil || g != e.a {
		t.Fatalf("searches must go on: %v %v", g, err)
	}
	if _, err := e.cat.Refresh(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.cat.Writers(); err != nil {
		t.Fatalf("after a successful read: %v", err)
	}
}

// <alias>-next on an index no configured generation owns (a switch started
// by gateways with a newer configuration): writes are refused, searches go
// on.
func TestCatalogUnknownNextGenerationRefusesWrites(t *testing.T) {
	e := newEnv(t)
	other := NewGeneration("c", fakeImages{seed: "c"}, fakeTexts{seed: "c"},
		esproxy.Provenance{Model: "fake_image", Version: "3", Dims: itDims, Generation: "c", Fingerprint: fakeVector("c", "fingerprint", itDims)},
		e.cat.Alias())
	gi, err := e.base.EnsureGeneration(e.ctx, other.Prov, "", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.base.DeleteConcrete(context.Background(), gi.Name) })
	if err := e.base.UpdateAliases(e.ctx, []esproxy.AliasAction{{Op: "add", Index: gi.Name, Alias: e.cat.NextAlias()}}); err != nil {
		t.Fatal(err)
	}
	v, err := e.cat.Refresh(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v.UnknownNext != gi.Name || v.Next != nil {
		t.Fatalf("view %+v", v)
	}
	_, _, err = e.cat.Writers()
	wantCode(t, err, apierr.Unavailable, CodeUnknownGeneration)
	if !strings.Contains(err.Error(), gi.Name) {
		t.Fatalf("the error must name the index: %v", err)
	}
	if g, err := e.cat.Reader(); err != nil || g != e.a {
		t.Fatalf("searches must go on: %v %v", g, err)
	}
}

// An index made before generations had names (no generation in its
// provenance, the old index name) is adopted by the generation with the
// same model instead of being replaced by an empty one.
func TestCatalogAdoptsAnIndexFromBeforeGenerations(t *testing.T) {
	cfg := esproxy.DefaultConfig()
	cfg.Addresses = []string{ttu.ESURL()}
	cfg.Index = "tusou-it-models-legacy-" + strings.ToLower(time.Now().Format("150405.000000"))
	cfg.Dims = itDims
	cfg.Replicas = 0
	base, err := esproxy.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	legacy := esproxy.Provenance{Model: "fake_image", Version: "1", Dims: itDims, Fingerprint: fakeVector("a", "fingerprint", itDims)}
	info, err := base.EnsureIndex(ctx, legacy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = base.DeleteConcrete(context.Background(), info.WriteIndex) })
	a := NewGeneration("a", fakeImages{seed: "a"}, fakeTexts{seed: "a"},
		esproxy.Provenance{Model: "fake_image", Version: "1", Dims: itDims, Generation: "a", TextModel: "fake_text", TextVersion: "1",
			Fingerprint: fakeVector("a", "fingerprint", itDims)}, cfg.Index)
	if a.Index() == info.WriteIndex {
		t.Fatal("test premise: the new name differs from the legacy one")
	}
	cat := NewCatalog(base, []*Generation{a}, CatalogOptions{PollInterval: time.Second, MaxStaleness: time.Minute}, nil, nil)
	defer cat.Close(ctx)
	if err := cat.Start(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if g, _ := cat.Reader(); g != a || a.Index() != info.WriteIndex || a.Store().Target() != info.WriteIndex {
		t.Fatalf("generation a lives in %q (store %q), want the legacy %q", a.Index(), a.Store().Target(), info.WriteIndex)
	}

	// Another model's index behind the alias is refused at start, naming why.
	b := NewGeneration("b", fakeImages{seed: "b"}, fakeTexts{seed: "b"},
		esproxy.Provenance{Model: "fake_image", Version: "1", Dims: itDims, Generation: "b", Fingerprint: fakeVector("b", "fingerprint", itDims)}, cfg.Index)
	cat2 := NewCatalog(base, []*Generation{b}, CatalogOptions{PollInterval: time.Second, MaxStaleness: time.Minute}, nil, nil)
	defer cat2.Close(ctx)
	err = cat2.Start(ctx, "b")
	if err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("want a refusal naming the fingerprint, got %v", err)
	}
}

// Of two overlapping readings, the one that started later stays published:
// an older reading finishing last must not take the view back in time.
func TestCatalogViewNeverGoesBack(t *testing.T) {
	e := newEnv(t)
	newer := &View{Active: e.a, Next: e.b, At: time.Now().Add(time.Hour)}
	e.cat.view.Store(newer)
	v, err := e.cat.Refresh(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v != newer || e.cat.View() != newer {
		t.Fatalf("an older reading replaced a newer one: %+v", e.cat.View())
	}
}
