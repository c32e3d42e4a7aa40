//go:build integration

package esproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/tusou/tusou/apierr"
)

// scanFixture is a generation's pinned client holding n documents written
// with refresh=false (not yet searchable: Scan and Count must refresh).
func scanFixture(t *testing.T, n int) (*Client, *Client) {
	t.Helper()
	ctx := context.Background()
	c := itClient(t, itConfig(t))
	gi, err := c.EnsureGeneration(ctx, itProv, "", false)
	if err != nil {
		t.Fatal(err)
	}
	g := c.ForIndex(gi.Name, itProv, gi.Quantized)
	t.Cleanup(func() { _ = g.Close(ctx) })
	rng := rand.New(rand.NewPCG(7, 7))
	docs := make([]Doc, n)
	for i := range docs {
		docs[i] = Doc{ID: fmt.Sprintf("d-%03d", i), Vector: unitVectorIT(rng), Width: i + 1,
			Metadata: map[string]any{"i": i}, CreatedAt: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC)}
	}
	items, err := g.Bulk(ctx, docs, RefreshFalse)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Result != Created {
			t.Fatalf("%s: %s %v", it.ID, it.Result, it.Err)
		}
	}
	return c, g
}

func unitVectorIT(rng *rand.Rand) []float32 { return unitVector(rng, itDims) }

func TestIntegrationScanVisitsEveryDocumentOnce(t *testing.T) {
	ctx := context.Background()
	_, g := scanFixture(t, 37)
	var ids []string
	pages := 0
	err := g.Scan(ctx, 10, func(page []ScanHit) error {
		pages++
		if len(page) > 10 {
			t.Errorf("page of %d", len(page))
		}
		for _, h := range page {
			ids = append(ids, h.ID)
			if h.PrimaryTerm < 1 || h.SeqNo < 0 {
				t.Errorf("%s: seq_no %d primary_term %d", h.ID, h.SeqNo, h.PrimaryTerm)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(ids)
	want := make([]string, 37)
	for i := range want {
		want[i] = fmt.Sprintf("d-%03d", i)
	}
	if !reflect.DeepEqual(ids, want) || pages != 4 {
		t.Fatalf("%d pages, ids %v", pages, ids)
	}
	// An error from fn stops the scan and comes back as is.
	stop := fmt.Errorf("stop")
	calls := 0
	if err := g.ScanIDs(ctx, 5, func([]string) error { calls++; return stop }); err != stop || calls != 1 {
		t.Fatalf("ScanIDs error %v after %d calls", err, calls)
	}
}

func TestIntegrationGetDocsCountAndGuardedDelete(t *testing.T) {
	ctx := context.Background()
	c, g := scanFixture(t, 12)
	if n, err := g.Count(ctx); err != nil || n != 12 {
		t.Fatalf("Count = %d, %v", n, err)
	}
	if n, err := g.CountCreatedBefore(ctx, time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC)); err != nil || n != 5 {
		t.Fatalf("CountCreatedBefore = %d, %v", n, err)
	}
	if _, found, err := c.CountIndex(ctx, c.Alias()+"-absent"); err != nil || found {
		t.Fatalf("CountIndex of a missing index: found %v, %v", found, err)
	}
	docs, err := g.GetDocs(ctx, []string{"d-005", "absent", "d-006"})
	if err != nil || len(docs) != 2 || docs[0].ID != "d-005" || docs[1].ID != "d-006" || docs[0].PrimaryTerm < 1 {
		t.Fatalf("GetDocs: %+v %v", docs, err)
	}
	d := docs[0]
	if d.Width != 6 || d.Metadata["i"] != json.Number("5") || !d.CreatedAt.Equal(time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC)) || d.Model != itProv.Model {
		t.Fatalf("GetDocs doc: %+v", d)
	}
	if r, err := g.DeleteIfUnchanged(ctx, "d-005", d.SeqNo+100, d.PrimaryTerm); err != nil || r != Changed {
		t.Fatalf("stale delete: %v %v", r, err)
	}
	if r, err := g.DeleteIfUnchanged(ctx, "d-005", d.SeqNo, d.PrimaryTerm); err != nil || r != Deleted {
		t.Fatalf("delete: %v %v", r, err)
	}
	// Gone since: Elasticsearch answers a guarded delete of a missing
	// document with a conflict or a 404; neither is an error.
	if r, err := g.DeleteIfUnchanged(ctx, "d-005", d.SeqNo, d.PrimaryTerm); err != nil || r == Deleted {
		t.Fatalf("second delete: %v %v", r, err)
	}
	if n, err := g.Count(ctx); err != nil || n != 11 {
		t.Fatalf("Count after delete = %d, %v", n, err)
	}
	// A missing index is an error, not "gone".
	other := c.ForIndex(c.Alias()+"-absent", itProv, false)
	defer other.Close(ctx)
	if _, err := other.DeleteIfUnchanged(ctx, "x", 0, 1); apierr.KindOf(err) != apierr.NotFound {
		t.Fatalf("delete in a missing index: %v", err)
	}
	if _, err := other.Count(ctx); apierr.KindOf(err) != apierr.NotFound {
		t.Fatalf("count of a missing index: %v", err)
	}
}
