package app

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartingHandler(t *testing.T) {
	var h swapHandler
	h.Store(startingHandler{})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != 200 {
		t.Fatalf("/healthz while starting: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 503 || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("/readyz while starting: %d %v", rec.Code, rec.Header())
	}
	h.Store(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 204 {
		t.Fatalf("after the swap the gateway must answer: %d", rec.Code)
	}
}

// TestResolveTokenizer: with the setting empty, only the exported real
// tokenizer at its documented place is taken; without it start-up fails
// naming the setting instead of quietly using the tiny test tokenizer.
func TestResolveTokenizer(t *testing.T) {
	if p, err := resolveTokenizer("/models/clip_text/tokenizer.json"); err != nil || p != "/models/clip_text/tokenizer.json" {
		t.Fatalf("configured path: got %q, %v", p, err)
	}
	dir := t.TempDir()
	t.Chdir(dir)
	// Only the tiny one exists, as in a checkout without exported models.
	tiny := filepath.Join(dir, "model_repository", "tiny", "clip_text")
	if err := os.MkdirAll(tiny, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tiny, "tokenizer.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := resolveTokenizer(""); err == nil || !strings.Contains(err.Error(), "text.tokenizer_path") {
		t.Fatalf("no real tokenizer: want an error naming text.tokenizer_path, got %q, %v", p, err)
	}
	real := filepath.Join(dir, "model_repository", "clip_text")
	if err := os.MkdirAll(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(real, "tokenizer.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := resolveTokenizer(""); err != nil || p != filepath.Join("model_repository", "clip_text", "tokenizer.json") {
		t.Fatalf("exported tokenizer: got %q, %v", p, err)
	}
}
