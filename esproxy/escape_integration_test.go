//go:build integration

package esproxy

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/tusou/tusou/apierr"
)

// TestIntegrationIDsAreOnePathSegment: esapi writes a document id into the
// URL as it is. Every id, however hostile, must reach the real node as one
// escaped segment of /<index>/_doc/ (or _create), and be answered as the id
// it is: a missing document, never document "a" or another endpoint.
func TestIntegrationIDsAreOnePathSegment(t *testing.T) {
	var mu sync.Mutex
	var uris []string
	target, _ := url.Parse(esURL())
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		uris = append(uris, r.Method+" "+r.RequestURI)
		mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close) // registered before itClient: closes after its cleanup
	cfg := itConfig(t)
	cfg.Addresses = []string{srv.URL}
	c := itClient(t, cfg)
	ensure(t, c, itProv)
	ctx := context.Background()
	v := unitVector(rand.New(rand.NewPCG(41, 42)), itDims)
	if _, err := c.Index(ctx, Doc{ID: "a", Vector: v}, ""); err != nil {
		t.Fatal(err)
	}

	hostile := []string{"a#b", "a?b", "a?pretty", "../_search", "..", ".", "a/../../_search", "a%23b", "a b"}
	mu.Lock()
	uris = nil
	mu.Unlock()
	for _, id := range hostile {
		_, err := c.Get(ctx, id)
		wantKind(t, err, apierr.NotFound, CodeDocNotFound)
		_, err = c.Vector(ctx, id)
		wantKind(t, err, apierr.NotFound, CodeDocNotFound)
		wantKind(t, c.Delete(ctx, id, "false"), apierr.NotFound, CodeDocNotFound)
	}
	mu.Lock()
	seen := append([]string(nil), uris...)
	mu.Unlock()
	if len(seen) != 3*len(hostile) {
		t.Fatalf("%d requests for %d lookups: %v", len(seen), 3*len(hostile), seen)
	}
	for _, u := range seen {
		_, uri, _ := strings.Cut(u, " ")
		path, _, _ := strings.Cut(uri, "?")
		rest, ok := strings.CutPrefix(path, "/"+cfg.Index+"/_doc/")
		if !ok || strings.ContainsAny(rest, "/#") || rest == "." || rest == ".." {
			t.Errorf("request left its document: %s", u)
		}
	}

	// An id that needs escaping is stored and read back as itself.
	for _, id := range []string{"x#y", "x?y", "../_search", ".."} {
		if r, err := c.Index(ctx, Doc{ID: id, Vector: v}, "false"); err != nil || r != Created {
			t.Fatalf("index %q: %s %v", id, r, err)
		}
		if d, err := c.Get(ctx, id); err != nil || d.ID != id {
			t.Fatalf("get %q: %+v %v", id, d, err)
		}
	}
	if d, err := c.Get(ctx, "a"); err != nil || d.ID != "a" {
		t.Fatalf("document a after the probes: %+v %v", d, err)
	}
}
