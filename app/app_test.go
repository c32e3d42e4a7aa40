package app

import (
	"net/http"
	"net/http/httptest"
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
