package esproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/tusou/tusou/apierr"
)

// visibilityES is a fake Elasticsearch that models what a refresh does: a
// change (create or delete) is searchable once a refresh that STARTED after
// the change has ended. Writers check their own change the moment their call
// returns, which is the promise of refresh=wait_for.
type visibilityES struct {
	t *testing.T
	// beforeCreate, when set, runs before a create is applied (it may block).
	beforeCreate func(n int)
	// onRefresh, when set, runs after a refresh took its snapshot (it may
	// block); a non-zero status fails that refresh with it.
	onRefresh func(n int) (status int)

	mu      sync.Mutex
	seq     int            // change counter
	created map[string]int // id -> seq of its create
	deleted map[string]int // id -> seq of its delete
	visible int            // changes with seq <= visible are searchable
	creates int
	starts  []time.Time // refresh arrivals
	ends    []time.Time // refresh answers
}

func newVisibilityES(t *testing.T) (*visibilityES, string) {
	f := &visibilityES{t: t, created: map[string]int{}, deleted: map[string]int{}}
	refreshPath := "/" + ConcreteIndexName("test-images", testProv) + "/_refresh"
	srv := fakeES(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == refreshPath:
			f.mu.Lock()
			n := len(f.starts)
			f.starts = append(f.starts, time.Now())
			snapshot := f.seq
			f.mu.Unlock()
			status := 0
			if f.onRefresh != nil {
				status = f.onRefresh(n)
			}
			f.mu.Lock()
			if status == 0 {
				f.visible = max(f.visible, snapshot)
			}
			f.ends = append(f.ends, time.Now())
			f.mu.Unlock()
			if status != 0 {
				w.WriteHeader(status)
				_, _ = io.WriteString(w, `{"error":{"type":"cluster_block_exception","reason":"refresh refused"},"status":503}`)
				return
			}
			_, _ = io.WriteString(w, `{"_shards":{"total":1,"successful":1,"failed":0}}`)
		case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/test-images/_create/"):
			if r.URL.Query().Has("refresh") {
				t.Errorf("create with a refresh parameter: %s", r.URL)
			}
			id := strings.TrimPrefix(r.URL.Path, "/test-images/_create/")
			f.mu.Lock()
			n := f.creates
			f.creates++
			f.mu.Unlock()
			if f.beforeCreate != nil {
				f.beforeCreate(n)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if _, ok := f.created[id]; ok {
				w.WriteHeader(409)
				_, _ = io.WriteString(w, `{"error":{"type":"version_conflict_engine_exception","reason":"exists"},"status":409}`)
				return
			}
			f.seq++
			f.created[id] = f.seq
			w.WriteHeader(201)
			_, _ = io.WriteString(w, `{"result":"created"}`)
		case r.Method == http.MethodPost && r.URL.Path == "/test-images/_bulk":
			if r.URL.Query().Has("refresh") {
				t.Errorf("bulk with a refresh parameter: %s", r.URL)
			}
			body, _ := io.ReadAll(r.Body)
			lines := strings.Split(strings.TrimSpace(string(body)), "\n")
			f.mu.Lock()
			defer f.mu.Unlock()
			var items []string
			for i := 0; i < len(lines); i += 2 {
				var action struct {
					Create struct {
						ID string `json:"_id"`
					} `json:"create"`
				}
				_ = json.Unmarshal([]byte(lines[i]), &action)
				f.seq++
				f.created[action.Create.ID] = f.seq
				items = append(items, `{"create":{"status":201}}`)
			}
			_, _ = io.WriteString(w, `{"errors":false,"items":[`+strings.Join(items, ",")+`]}`)
		case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/test-images/_doc/"):
			id := strings.TrimPrefix(r.URL.Path, "/test-images/_doc/")
			f.mu.Lock()
			defer f.mu.Unlock()
			f.seq++
			f.deleted[id] = f.seq
			_, _ = io.WriteString(w, `{"result":"deleted"}`)
		default:
			t.Errorf("unexpected request %s %s", r.Method, r.URL)
			w.WriteHeader(400)
		}
	})
	return f, srv.URL
}

// searchable reports whether id's create is visible to search.
func (f *visibilityES) searchable(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.created[id]
	return ok && s <= f.visible
}

// goneFromSearch reports whether id's delete is visible to search.
func (f *visibilityES) goneFromSearch(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.deleted[id]
	return ok && s <= f.visible
}

func (f *visibilityES) refreshCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.starts)
}

func histogram(t *testing.T, c *Client) (count uint64, sum float64) {
	t.Helper()
	var m dto.Metric
	if err := c.refresher.metrics.writers.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

func testDoc(id string) Doc {
	return Doc{ID: id, Vector: unitVector(rand.New(rand.NewPCG(uint64(len(id)), 7)), testProv.Dims)}
}

// mustRefresher replaces a client's refresher in tests (no metrics registry).
func mustRefresher(t *testing.T, refresh func(context.Context) error, minInterval time.Duration) *refresher {
	t.Helper()
	r := newRefresher(refresh, minInterval, time.Minute, nil)
	t.Cleanup(func() { r.close(context.Background()) })
	return r
}

// waitUntil polls cond (the test's own hang guard, not a timing assertion).
func waitUntil(t *testing.T, what string, cond func() bool) bool {
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("gave up waiting until %s", what)
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// One refresh serves every writer that registered while the previous one
// was in flight, and none is released by a refresh that started before its
// write: writer 0's refresh is held until the 31 others have written (after
// it started) and are waiting; they must all be served by exactly one more.
func TestRefreshCoalescesConcurrentWriters(t *testing.T) {
	const n = 32
	f, url := newVisibilityES(t)
	cfg := testConfig(url)
	cfg.RefreshMinInterval = 0
	c := newTestClient(t, cfg)
	firstStarted := make(chan struct{})
	f.beforeCreate = func(k int) {
		if k > 0 {
			<-firstStarted // everybody else writes after refresh 0 took its snapshot
		}
	}
	f.onRefresh = func(k int) int {
		if k == 0 {
			close(firstStarted)
			waitUntil(t, "all writers wait for a refresh", func() bool { return c.refresher.waiting() == n })
		}
		return 0
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("doc-%02d", i)
			if _, errs[i] = c.Index(context.Background(), testDoc(id), ""); errs[i] == nil && !f.searchable(id) {
				errs[i] = fmt.Errorf("%s: Index returned before the document was searchable", id)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := f.refreshCount(); got != 2 {
		t.Errorf("%d refreshes for %d concurrent writers, want 2 (one for the first, one for the 31 that came during it)", got, n)
	}
	if count, sum := histogram(t, c); count != 2 || sum != n {
		t.Errorf("writers per refresh: %d observations summing to %g, want 2 summing to %d", count, sum, n)
	}
	if c.refresher.waiting() != 0 {
		t.Errorf("%d writers still counted as waiting", c.refresher.waiting())
	}
}

// Refreshes are spaced: the next starts at least the minimum interval after
// the previous ended (the fake's stamps bracket the refresher's own).
func TestRefreshMinIntervalSpacesRefreshes(t *testing.T) {
	f, url := newVisibilityES(t)
	cfg := testConfig(url)
	cfg.RefreshMinInterval = 80 * time.Millisecond
	c := newTestClient(t, cfg)
	for i := range 4 {
		id := fmt.Sprintf("seq-%d", i)
		if _, err := c.Index(context.Background(), testDoc(id), RefreshWaitFor); err != nil {
			t.Fatal(err)
		}
		if !f.searchable(id) {
			t.Fatalf("%s not searchable when Index returned", id)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.starts) != 4 {
		t.Fatalf("%d refreshes for 4 sequential writes", len(f.starts))
	}
	for k := 1; k < len(f.starts); k++ {
		if gap := f.starts[k].Sub(f.ends[k-1]); gap < cfg.RefreshMinInterval {
			t.Errorf("refresh %d started %s after refresh %d ended; minimum %s", k, gap, k-1, cfg.RefreshMinInterval)
		}
	}
}

// refresh=true skips the minimum interval; refresh=false never waits; a
// writer that stops waiting gets its context's error, saying the write
// happened.
func TestRefreshPolicies(t *testing.T) {
	f, url := newVisibilityES(t)
	c := newTestClient(t, testConfig(url))
	// An interval no test could sit out: only force may refresh again.
	c.refresher = mustRefresher(t, c.refreshWriteIndex, time.Hour)
	ctx := context.Background()

	if _, err := c.Index(ctx, testDoc("first"), ""); err != nil || !f.searchable("first") {
		t.Fatalf("first write: %v, searchable %v", err, f.searchable("first"))
	}

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err := c.Index(short, testDoc("parked"), "")
	e := wantKind(t, err, apierr.Timeout, CodeRefreshFailed)
	if e != nil && !strings.Contains(e.Message, "write succeeded") {
		t.Errorf("message does not say the write happened: %s", e.Message)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cause not kept: %v", err)
	}
	f.mu.Lock()
	_, written := f.created["parked"]
	f.mu.Unlock()
	if !written || f.refreshCount() != 1 {
		t.Fatalf("parked write stored %v, refreshes %d (want stored, 1)", written, f.refreshCount())
	}

	canceled, cancel2 := context.WithCancel(ctx)
	go func() { time.Sleep(20 * time.Millisecond); cancel2() }()
	_, err = c.Index(canceled, testDoc("canceled"), "")
	wantKind(t, err, apierr.Canceled, CodeRefreshFailed)

	if _, err := c.Index(ctx, testDoc("unrefreshed"), RefreshFalse); err != nil {
		t.Fatal(err)
	}
	if f.refreshCount() != 1 {
		t.Fatalf("refresh=false refreshed")
	}

	guard, cancel3 := context.WithTimeout(ctx, 20*time.Second) // hang guard only
	defer cancel3()
	if _, err := c.Index(guard, testDoc("forced"), RefreshTrue); err != nil {
		t.Fatalf("refresh=true did not skip the interval: %v", err)
	}
	for _, id := range []string{"forced", "parked", "canceled", "unrefreshed"} {
		if !f.searchable(id) {
			t.Errorf("%s not searchable after the forced refresh", id)
		}
	}
	if f.refreshCount() != 2 {
		t.Errorf("%d refreshes, want 2", f.refreshCount())
	}
}

// Deletes wait too: gone from search when Delete returns; and an exists
// answer waits, since the existing document may not be refreshed yet.
func TestRefreshDeleteAndExists(t *testing.T) {
	f, url := newVisibilityES(t)
	c := newTestClient(t, testConfig(url))
	ctx := context.Background()
	if _, err := c.Index(ctx, testDoc("dup"), RefreshFalse); err != nil {
		t.Fatal(err)
	}
	if f.searchable("dup") {
		t.Fatal("fake: visible without a refresh")
	}
	if r, err := c.Index(ctx, testDoc("dup"), ""); err != nil || r != Exists {
		t.Fatalf("want exists, got %s %v", r, err)
	}
	if !f.searchable("dup") {
		t.Error("exists answered before the existing document was searchable")
	}
	if err := c.Delete(ctx, "dup", ""); err != nil {
		t.Fatal(err)
	}
	if !f.goneFromSearch("dup") {
		t.Error("Delete returned before the delete was searchable")
	}
}

// A bulk waits for one refresh for all its documents.
func TestRefreshBulk(t *testing.T) {
	f, url := newVisibilityES(t)
	c := newTestClient(t, testConfig(url))
	docs := []Doc{testDoc("b1"), testDoc("b22"), {ID: "bad"}, testDoc("b333")}
	items, err := c.Bulk(context.Background(), docs, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if (it.Result == Created) != f.searchable(it.ID) || (it.ID == "bad") != (it.Result == Failed) {
			t.Errorf("%v: searchable %v", it, f.searchable(it.ID))
		}
	}
	if f.refreshCount() != 1 {
		t.Errorf("%d refreshes for one bulk, want 1", f.refreshCount())
	}
	// Nothing stored, nothing to wait for.
	if _, err := c.Bulk(context.Background(), []Doc{{ID: "bad"}}, ""); err != nil || f.refreshCount() != 1 {
		t.Errorf("an all-invalid bulk refreshed (%d) or failed: %v", f.refreshCount(), err)
	}
}

// A failed refresh fails every writer it was to serve, each told that its
// write itself succeeded.
func TestRefreshFailureFansOut(t *testing.T) {
	const n = 8
	f, url := newVisibilityES(t)
	cfg := testConfig(url)
	cfg.RefreshMinInterval = 0
	c := newTestClient(t, cfg)
	f.onRefresh = func(k int) int {
		if k == 0 {
			waitUntil(t, "all writers wait for a refresh", func() bool { return c.refresher.waiting() == n })
		}
		return http.StatusServiceUnavailable
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.Index(context.Background(), testDoc(fmt.Sprintf("fail-%d", i)), "")
		}()
	}
	wg.Wait()
	for i, err := range errs {
		e := wantKind(t, err, apierr.Unavailable, CodeRefreshFailed)
		if e != nil && (!strings.Contains(e.Message, "write succeeded") || e.RetryAfter <= 0) {
			t.Errorf("writer %d: %q (retry after %s)", i, e.Message, e.RetryAfter)
		}
	}
	f.mu.Lock()
	stored := len(f.created)
	f.mu.Unlock()
	if stored != n {
		t.Errorf("%d of %d writes stored", stored, n)
	}
	var m dto.Metric
	_ = c.metrics.requests.WithLabelValues("refresh", "unavailable").Write(&m)
	if got := int(m.GetCounter().GetValue()); got != f.refreshCount() || got == 0 {
		t.Errorf("refresh outcome metric %d, refreshes %d", got, f.refreshCount())
	}
}

// Close releases a writer parked in the interval, stops the loop, and later
// writers are refused rather than parked.
func TestRefresherClose(t *testing.T) {
	f, url := newVisibilityES(t)
	c := newTestClient(t, testConfig(url))
	c.refresher = mustRefresher(t, c.refreshWriteIndex, time.Hour)
	r := c.refresher
	if err := r.wait(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.wait(context.Background(), false) }()
	waitUntil(t, "the writer waits", func() bool { return r.waiting() == 1 })
	r.close(context.Background())
	wantKind(t, <-done, apierr.Unavailable, CodeRefreshFailed)
	select {
	case <-r.exited:
	default:
		t.Error("refresh loop still running after close")
	}
	wantKind(t, r.wait(context.Background(), true), apierr.Unavailable, CodeRefreshFailed)
	if f.refreshCount() != 1 {
		t.Errorf("%d refreshes, want 1", f.refreshCount())
	}
	r.close(context.Background()) // idempotent

	// A refresher no writer ever used closes without a loop to wait for.
	idle := mustRefresher(t, c.refreshWriteIndex, 0)
	idle.close(context.Background())
	wantKind(t, idle.wait(context.Background(), false), apierr.Unavailable, CodeRefreshFailed)
}
