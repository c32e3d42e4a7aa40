//go:build integration

package models

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/blobstore"
	"github.com/tusou/tusou/esproxy"
	ttu "github.com/tusou/tusou/internal/testutil"
)

// legacyGateway is one gateway's catalog and switcher over a shared alias.
type legacyGateway struct {
	cat  *Catalog
	a, b *Generation
	sw   *Switcher
}

func newLegacyGateway(t *testing.T, base *esproxy.Client, blobs *blobstore.Dir) *legacyGateway {
	t.Helper()
	alias := base.Alias()
	gw := &legacyGateway{}
	gw.a = NewGeneration("a", fakeImages{seed: "a"}, fakeTexts{seed: "a"},
		esproxy.Provenance{Model: "fake_image", Version: "1", Dims: itDims, Generation: "a", TextModel: "fake_text", TextVersion: "1",
			Fingerprint: fakeVector("a", "fingerprint", itDims)}, alias)
	gw.b = NewGeneration("b", fakeImages{seed: "b"}, fakeTexts{seed: "b"},
		esproxy.Provenance{Model: "fake_image", Version: "2", Dims: itDims, Generation: "b", TextModel: "fake_text", TextVersion: "2",
			Fingerprint: fakeVector("b", "fingerprint", itDims)}, alias)
	gw.cat = NewCatalog(base, []*Generation{gw.a, gw.b}, CatalogOptions{PollInterval: time.Second, MaxStaleness: time.Minute}, nil, nil)
	gw.sw = NewSwitcher(gw.cat, blobs, SwitchOptions{Workers: 2, PageSize: 16, Propagation: 50 * time.Millisecond}, nil, nil)
	if err := gw.cat.Start(context.Background(), "a"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		_ = gw.sw.Close(context.Background())
		gw.cat.Close(context.Background())
	})
	return gw
}

func (gw *legacyGateway) switchTo(t *testing.T, to string) {
	t.Helper()
	ctx := context.Background()
	if _, _, err := gw.sw.Switch(ctx, to); err != nil {
		t.Fatalf("switch to %s: %v", to, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := gw.sw.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Switch != nil && !st.Switch.Running {
			if st.Switch.State != StateDone {
				t.Fatalf("switch to %s: %s (%s)", to, st.Switch.State, deref(st.Switch.Error))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("switch to %s still running", to)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A generation that lived in an index from before generations had names
// (legacy name), pruned and switched to again, gets an index under its own
// name, and every gateway follows the alias to that index: none keeps
// writing to the pruned legacy index (Elasticsearch would auto-create it
// without a mapping and the writes would be lost to the generation).
func TestSwitchBackToPrunedLegacyGenerationIntegration(t *testing.T) {
	ctx := context.Background()
	cfg := esproxy.DefaultConfig()
	cfg.Addresses = []string{ttu.ESURL()}
	cfg.Index = fmt.Sprintf("tusou-it-models-relegacy-%x", time.Now().UnixNano()&0xffffffff)
	cfg.Dims = itDims
	cfg.Replicas = 0
	base, err := esproxy.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close(ctx)
	legacy := esproxy.Provenance{Model: "fake_image", Version: "1", Dims: itDims, Fingerprint: fakeVector("a", "fingerprint", itDims)}
	info, err := base.EnsureIndex(ctx, legacy)
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := blobstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Two gateways started while the legacy index is active.
	g1 := newLegacyGateway(t, base, blobs)
	g2 := newLegacyGateway(t, base, blobs)
	canonical := esproxy.ConcreteIndexName(cfg.Index, g1.a.Prov)
	t.Cleanup(func() {
		for _, idx := range []string{info.WriteIndex, canonical, g1.b.Index()} {
			_ = base.DeleteConcrete(context.Background(), idx)
		}
	})
	if g1.a.Index() != info.WriteIndex || g2.a.Index() != info.WriteIndex {
		t.Fatalf("test premise: both gateways adopt the legacy index %q (%q, %q)", info.WriteIndex, g1.a.Index(), g2.a.Index())
	}
	// Documents in the legacy index, with originals.
	docs := make([]esproxy.Doc, 5)
	for i := range docs {
		data := image(i)
		if err := blobs.Put(ctx, imageID(i), data); err != nil {
			t.Fatal(err)
		}
		vec, _, _ := fakeImages{seed: "a"}.Embed(ctx, data)
		docs[i] = esproxy.Doc{ID: imageID(i), Vector: vec, ContentType: "image/png", Width: 1, Height: 1,
			Bytes: int64(len(data)), SHA256: sha256Hex(data), CreatedAt: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC)}
	}
	if _, err := g1.a.Store().Bulk(ctx, docs, esproxy.RefreshTrue); err != nil {
		t.Fatal(err)
	}

	// Gateway 2 switches to b, prunes a (the legacy index), switches back.
	g2.switchTo(t, "b")
	// Right after the switch another gateway may still write to a: a prune
	// now would let Elasticsearch auto-create an unmapped index in its place.
	// (The switch took longer than its 50 ms propagation here: as if a had
	// been seen active just now.)
	g2.a.inUse.Store(time.Now().UnixNano())
	_, err = g2.sw.Prune(ctx, "a")
	wantCode(t, err, apierr.Conflict, CodeRecentlyInUse)
	time.Sleep(apierr.As(err).RetryAfter)
	if _, err := g2.sw.Prune(ctx, "a"); err != nil {
		t.Fatalf("prune: %v", err)
	}
	g2.switchTo(t, "a")
	tg, err := base.AliasTargets(ctx, cfg.Index)
	if err != nil {
		t.Fatal(err)
	}
	if got := tg[cfg.Index]; len(got) != 1 || got[0] != canonical {
		t.Errorf("alias on %v, want a's index under its own name %q (not the pruned legacy %q)", got, canonical, info.WriteIndex)
	}

	// Gateway 1 follows the alias: its writes land in the active index.
	if _, err := g1.cat.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	active, _, err := g1.cat.Writers()
	if err != nil {
		t.Fatal(err)
	}
	if active != g1.a || active.Store().Target() != tg[cfg.Index][0] {
		t.Fatalf("gateway 1 writes to %q, the alias is on %v", active.Store().Target(), tg[cfg.Index])
	}
	if active.Index() != tg[cfg.Index][0] {
		t.Errorf("gateway 1 says a lives in %q, the alias is on %v", active.Index(), tg[cfg.Index])
	}
}
