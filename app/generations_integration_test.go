//go:build integration

package app

import (
	"bytes"
	"context"
	"math"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/internal/testutil"
	"github.com/tusou/tusou/models"
)

// twoGenerations configures the local stack's two tiny generations: the
// same models at versions 1 (a, active) and 2 (b).
func twoGenerations(c *config.Config) {
	c.Models.Initial = "a"
	c.Models.PollInterval = 100 * time.Millisecond
	c.Models.MaxStaleness = 2 * time.Second
	c.Models.Generations = []config.Generation{
		{Name: "a", ImageModel: config.ModelRef{Version: "1"}, TextModel: config.ModelRef{Version: "1"}},
		{Name: "b", ImageModel: config.ModelRef{Version: "2"}, TextModel: config.ModelRef{Version: "2"}},
	}
}

func cosine(a, b []float32) float64 {
	var dot, na, nb float64
	for i := range a {
		dot, na, nb = dot+float64(a[i])*float64(b[i]), na+float64(a[i])*float64(a[i]), nb+float64(b[i])*float64(b[i])
	}
	return dot / math.Sqrt(na*nb)
}

// While <alias>-next points at generation b's index, every ingest lands in
// both generations, each with its own model's vector, and every delete
// leaves both; searches stay on a.
func TestDualWriteWhileAGenerationIsFilled(t *testing.T) {
	s := startGateway(t, twoGenerations)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cat := s.app.catalog
	a, b := cat.Generation("a"), cat.Generation("b")
	if v := cat.View(); v.Active != a || v.Next != nil {
		t.Fatalf("active %v next %v, want a and none", v.Active, v.Next)
	}
	if a.Prov.Fingerprint == nil || cosine(a.Prov.Fingerprint, b.Prov.Fingerprint) > 0.99 {
		t.Fatal("the two generations must be different models (fingerprints)")
	}
	// What a switch does first: b's index, then <alias>-next on it.
	bs, err := cat.Open(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.Base().UpdateAliases(ctx, []esproxy.AliasAction{{Op: "add", Index: b.Index(), Alias: cat.NextAlias()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cat.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if v := cat.View(); v.Next != b {
		t.Fatalf("next %v, want b", v.Next)
	}

	photo := readFile(t, filepath.Join(testutil.Root(), "model_repository/testdata/images/china_original.jpg"))
	resp, err := http.Post(s.url+"/v1/images?id=p1", "image/jpeg", bytes.NewReader(photo))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 && resp.StatusCode != 200 {
		t.Fatalf("ingest: %d", resp.StatusCode)
	}
	va, err := a.Store().Vector(ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	vb, err := bs.Vector(ctx, "p1")
	if err != nil {
		t.Fatalf("not written to the generation being filled: %v", err)
	}
	fa, _, err := a.Images.Embed(ctx, photo)
	if err != nil {
		t.Fatal(err)
	}
	fb, _, err := b.Images.Embed(ctx, photo)
	if err != nil {
		t.Fatal(err)
	}
	if cosine(va, fa) < 0.9999 || cosine(vb, fb) < 0.9999 || cosine(va, vb) > 0.99 {
		t.Fatalf("each generation must hold its own model's vector: a~a %.5f, b~b %.5f, a~b %.5f", cosine(va, fa), cosine(vb, fb), cosine(va, vb))
	}
	da, _ := a.Store().Get(ctx, "p1")
	db, _ := bs.Get(ctx, "p1")
	if da.SHA256 != db.SHA256 || !da.CreatedAt.Equal(db.CreatedAt) || db.ModelVersion != "2" || da.ModelVersion != "1" {
		t.Fatalf("the same document, stamped with each model: a %+v, b %+v", da, db)
	}

	req, _ := http.NewRequest("DELETE", s.url+"/v1/images/p1", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	for name, st := range map[string]*esproxy.Client{"a": a.Store(), "b": bs} {
		if found, err := st.Exists(ctx, []string{"p1"}); err != nil || len(found) != 0 {
			t.Fatalf("generation %s still has the deleted image (%v)", name, err)
		}
	}
	if got := cat.View().RoleOf(b); got != models.RoleNext {
		t.Fatalf("role of b: %s", got)
	}
}
