package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tusou/tusou/client/clienttest"
)

// recordSleeps replaces the client's waits with a recorder, so back-off is
// asserted without sleeping.
func recordSleeps(c *Client) *[]time.Duration {
	var mu sync.Mutex
	var waits []time.Duration
	c.sleep = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		waits = append(waits, d)
		return ctx.Err()
	}
	return &waits
}

func newClient(t *testing.T, url string, opts ...Option) *Client {
	t.Helper()
	c, err := New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIngestSendsFilesPerFileMetadataAndOptions(t *testing.T) {
	g := clienttest.New()
	defer g.Close()
	g.NearDuplicatesOf = func(id string) []clienttest.NearDuplicate {
		return []clienttest.NearDuplicate{{ID: "other-" + id[:4], Score: 0.97}}
	}
	c := newClient(t, g.URL)
	files := []File{
		{Name: "a.jpg", Data: []byte("aaa"), Metadata: map[string]any{"image_name": "a.jpg", "album": "mine"}},
		{Name: "b.jpg", Data: []byte("bbb")},
	}
	resp, err := c.Ingest(context.Background(), files, IngestOptions{Refresh: RefreshFalse, NearDuplicates: true,
		Metadata: map[string]any{"album": "run", "camera": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Items) != 2 || resp.Items[0].Result != ResultCreated || resp.Items[0].ID != clienttest.ID([]byte("aaa")) {
		t.Fatalf("items %+v", resp.Items)
	}
	b := clienttest.ID([]byte("bbb"))
	if nd := resp.Items[1].NearDuplicates; len(nd) != 1 || nd[0].ID != "other-"+b[:4] || nd[0].Score != 0.97 {
		t.Fatalf("near duplicates not decoded: %+v", resp.Items[1])
	}
	ups := g.Uploads()
	if ups[0].Metadata["album"] != "mine" || ups[0].Metadata["camera"] != "x" || ups[0].Metadata["image_name"] != "a.jpg" {
		t.Fatalf("per-file metadata must win over the run's: %v", ups[0].Metadata)
	}
	if ups[1].Metadata["album"] != "run" || ups[1].Metadata["image_name"] != nil {
		t.Fatalf("file without own metadata gets the run's: %v", ups[1].Metadata)
	}
	if ups[0].Refresh != "false" || !ups[0].NearDuplicates {
		t.Fatalf("options not sent: %+v", ups[0])
	}
	// Again: idempotent by content hash.
	resp, err = c.Ingest(context.Background(), files[:1], IngestOptions{})
	if err != nil || resp.Items[0].Result != ResultExists {
		t.Fatalf("re-ingest: %+v %v", resp, err)
	}
}

func TestIngestAllFailedStillReturnsItems(t *testing.T) {
	g := clienttest.New()
	defer g.Close()
	g.Reject = func(name string, _ []byte) *clienttest.ItemError {
		return &clienttest.ItemError{Status: 422, Code: "image_corrupt", Message: name + " is corrupt"}
	}
	c := newClient(t, g.URL)
	resp, err := c.Ingest(context.Background(), []File{{Name: "x", Data: []byte("1")}, {Name: "y", Data: []byte("2")}}, IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Items[1].Error == nil || resp.Items[1].Error.Code != "image_corrupt" || resp.Items[1].Error.Message != "y is corrupt" {
		t.Fatalf("items %+v", resp.Items)
	}
	// One file: the error itself.
	_, err = c.Ingest(context.Background(), []File{{Name: "x", Data: []byte("1")}}, IngestOptions{})
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 422 || apiErr.Code != "image_corrupt" {
		t.Fatalf("single-file error: %v", err)
	}
}

func TestRetriesHonourRetryAfter(t *testing.T) {
	g := clienttest.New()
	defer g.Close()
	c := newClient(t, g.URL)
	waits := recordSleeps(c)
	g.FailNext(1, 429, "7")
	g.FailNext(1, 503, "")
	g.FailNext(1, 502, "")
	resp, err := c.Ingest(context.Background(), []File{{Name: "a", Data: []byte("a")}}, IngestOptions{})
	if err != nil || resp.Items[0].Result != ResultCreated {
		t.Fatalf("%+v %v", resp, err)
	}
	if len(*waits) != 3 || (*waits)[0] != 7*time.Second {
		t.Fatalf("waits %v: want Retry-After 7s first, then two back-offs", *waits)
	}
	// Back-off grows: equal jitter keeps attempt n within [d/2, d].
	if w := (*waits)[1]; w < 250*time.Millisecond || w > 500*time.Millisecond {
		t.Fatalf("second wait %v outside the back-off for attempt 2", w)
	}
	if n := g.Requests()["POST /v1/images"]; n != 4 {
		t.Fatalf("%d requests, want 4", n)
	}
}

func TestRetryAfterIsCapped(t *testing.T) {
	g := clienttest.New()
	defer g.Close()
	c := newClient(t, g.URL, WithRetry(Retry{MaxAttempts: 3, Initial: time.Millisecond, Max: time.Second, MaxRetryAfter: 5 * time.Second}))
	waits := recordSleeps(c)
	g.FailNext(1, 503, "86400")
	if _, err := c.Exists(context.Background(), []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(*waits, []time.Duration{5 * time.Second}) {
		t.Fatalf("waits %v", *waits)
	}
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	g := clienttest.New()
	defer g.Close()
	c := newClient(t, g.URL, WithRetry(Retry{MaxAttempts: 3, Initial: time.Millisecond, Max: time.Millisecond, MaxRetryAfter: time.Second}))
	recordSleeps(c)
	g.FailNext(5, 429, "1")
	_, err := c.SearchText(context.Background(), "cat", Query{})
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 429 || apiErr.Attempts != 3 || apiErr.RetryAfter != time.Second {
		t.Fatalf("err %v", err)
	}
	if n := g.Requests()["POST /v1/search/text"]; n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}
}

func TestNoRetryOnClientErrors(t *testing.T) {
	g := clienttest.New()
	defer g.Close()
	g.APIKey = "secret"
	c := newClient(t, g.URL)
	waits := recordSleeps(c)
	_, err := c.Exists(context.Background(), []string{"a"})
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 401 || apiErr.Code != "unauthorized" {
		t.Fatalf("err %v", err)
	}
	if len(*waits) != 0 {
		t.Fatalf("a 401 must not be retried: %v", *waits)
	}
	c = newClient(t, g.URL, WithAPIKey("secret"))
	if _, err := c.Exists(context.Background(), []string{"a"}); err != nil {
		t.Fatalf("with the key: %v", err)
	}
}

func TestRetriesConnectionErrors(t *testing.T) {
	// A port nobody listens on: every attempt is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := newClient(t, "http://"+addr, WithRetry(Retry{MaxAttempts: 4, Initial: time.Millisecond, Max: time.Millisecond}))
	waits := recordSleeps(c)
	_, err = c.Exists(context.Background(), []string{"a"})
	var te *TransportError
	if !errors.As(err, &te) || te.Attempts != 4 || len(*waits) != 3 {
		t.Fatalf("err %v, waits %v", err, *waits)
	}
}

func TestContextStopsRetries(t *testing.T) {
	g := clienttest.New()
	defer g.Close()
	c := newClient(t, g.URL)
	ctx, cancel := context.WithCancel(context.Background())
	c.sleep = func(context.Context, time.Duration) error { cancel(); return context.Canceled }
	g.FailNext(1, 503, "1")
	if _, err := c.Exists(ctx, []string{"a"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
}

func TestExistsSplitsAtMaxIDs(t *testing.T) {
	g := clienttest.New()
	defer g.Close()
	c := newClient(t, g.URL)
	known := g.Put([]byte("known"), nil)
	ids := make([]string, 2500)
	for i := range ids {
		ids[i] = clienttest.ID([]byte{byte(i), byte(i >> 8)})
	}
	ids[1700] = known
	found, err := c.Exists(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(found, []string{known}) {
		t.Fatalf("found %v", found)
	}
	calls := g.ExistsCalls()
	if len(calls) != 3 || len(calls[0]) != 1000 || len(calls[2]) != 500 {
		t.Fatalf("calls of %d", len(calls))
	}
}

func TestSearchAndSimilar(t *testing.T) {
	g := clienttest.New()
	defer g.Close()
	c := newClient(t, g.URL)
	a := g.Put([]byte("a"), map[string]any{"image_name": "a.jpg"})
	g.Put([]byte("b"), nil)
	g.Put([]byte("c"), nil)
	res, err := c.SearchText(context.Background(), "一只猫", Query{K: 2})
	if err != nil || len(res.Hits) != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	res, err = c.SearchImage(context.Background(), []byte("a"), Query{K: 3})
	if err != nil || len(res.Hits) != 3 {
		t.Fatalf("%+v %v", res, err)
	}
	res, err = c.Similar(context.Background(), a, Query{K: 10})
	if err != nil || len(res.Hits) != 2 || slices.ContainsFunc(res.Hits, func(h Hit) bool { return h.ID == a }) {
		t.Fatalf("similar must exclude the image itself: %+v %v", res, err)
	}
	_, err = c.Similar(context.Background(), "nope", Query{})
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 404 || apiErr.Code != "image_not_found" {
		t.Fatalf("err %v", err)
	}
}

func TestNonJSONErrorFromAProxy(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte("<html>denied</html>"))
	}))
	defer srv.Close()
	c := newClient(t, srv.URL)
	_, err := c.Exists(context.Background(), []string{"a"})
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Code != "http_403" || apiErr.Message != "<html>denied</html>" {
		t.Fatalf("err %v", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"": 0, "3": 3 * time.Second, "-1": 0, "soon": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
	} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("%q: %v, want %v", v, got, want)
		}
	}
}

func TestNewRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "localhost:8080", "ftp://x", "http://"} {
		if _, err := New(u); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}
