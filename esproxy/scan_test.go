package esproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tusou/tusou/apierr"
)

// pinnedTestClient is a generation's client of a fake Elasticsearch.
func pinnedTestClient(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	srv := fakeES(t, h)
	g := newTestClient(t, testConfig(srv.URL)).ForIndex("gen-a", testProv, false)
	t.Cleanup(func() { _ = g.Close(context.Background()) })
	return g
}

// fakePIT serves a refresh, a point in time over ids (pages of the
// requested size, a new pit id per page as Elasticsearch may hand out) and
// its close.
type fakePIT struct {
	mu      sync.Mutex
	ids     []string
	log     []string // requests in order
	bodies  []map[string]any
	closed  []string
	refresh int
}

func (f *fakePIT) handler(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.log = append(f.log, r.Method+" "+r.URL.Path)
		body, _ := io.ReadAll(r.Body)
		switch {
		case r.URL.Path == "/gen-a/_refresh":
			f.refresh++
			fmt.Fprint(w, `{"_shards":{"total":1,"successful":1,"failed":0}}`)
		case r.Method == http.MethodPost && r.URL.Path == "/gen-a/_pit":
			if r.URL.Query().Get("keep_alive") == "" {
				t.Errorf("open pit without keep_alive: %s", r.URL)
			}
			fmt.Fprint(w, `{"id":"pit-0"}`)
		case r.URL.Path == "/_search":
			var q struct {
				Size int `json:"size"`
				PIT  struct {
					ID string `json:"id"`
				} `json:"pit"`
				SearchAfter []int `json:"search_after"`
				Sort        []map[string]string
			}
			if err := json.Unmarshal(body, &q); err != nil {
				t.Errorf("search body %s: %v", body, err)
			}
			var raw map[string]any
			_ = json.Unmarshal(body, &raw)
			f.bodies = append(f.bodies, raw)
			if len(q.Sort) != 1 || q.Sort[0]["_shard_doc"] != "asc" {
				t.Errorf("sort %v, want _shard_doc", q.Sort)
			}
			start := 0
			if len(q.SearchAfter) == 1 {
				start = q.SearchAfter[0] + 1
			}
			page := len(f.bodies)
			if want := fmt.Sprintf("pit-%d", page-1); q.PIT.ID != want {
				t.Errorf("page %d used pit %q, want %q", page, q.PIT.ID, want)
			}
			var hits []string
			for i := start; i < min(start+q.Size, len(f.ids)); i++ {
				hits = append(hits, fmt.Sprintf(`{"_id":%q,"_seq_no":%d,"_primary_term":2,"sort":[%d]}`, f.ids[i], 100+i, i))
			}
			fmt.Fprintf(w, `{"pit_id":"pit-%d","hits":{"hits":[%s]}}`, page, strings.Join(hits, ","))
		case r.Method == http.MethodDelete && r.URL.Path == "/_pit":
			var q struct {
				ID string `json:"id"`
			}
			_ = json.Unmarshal(body, &q)
			f.closed = append(f.closed, q.ID)
			fmt.Fprint(w, `{"succeeded":true,"num_freed":1}`)
		default:
			t.Errorf("unexpected %s %s", r.Method, r.URL)
			w.WriteHeader(400)
		}
	}
}

func TestScanPagesThroughAPointInTime(t *testing.T) {
	f := &fakePIT{}
	for i := range 7 {
		f.ids = append(f.ids, fmt.Sprintf("id-%d", i))
	}
	g := pinnedTestClient(t, f.handler(t))
	var got []ScanHit
	err := g.Scan(context.Background(), 3, func(page []ScanHit) error {
		got = append(got, page...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 7 || got[6] != (ScanHit{ID: "id-6", SeqNo: 106, PrimaryTerm: 2}) {
		t.Fatalf("hits %+v", got)
	}
	// Refresh first (a point in time sees refreshed segments only), three
	// pages (the last one short ends the scan), and the latest pit closed.
	if f.refresh != 1 || len(f.bodies) != 3 || len(f.closed) != 1 || f.closed[0] != "pit-3" {
		t.Fatalf("refresh %d, pages %d, closed %v; log %v", f.refresh, len(f.bodies), f.closed, f.log)
	}
	for _, b := range f.bodies {
		if b["_source"] != false || b["seq_no_primary_term"] != true || b["track_total_hits"] != false {
			t.Fatalf("page body %v", b)
		}
	}
}

func TestScanStopsOnCallbackErrorAndStillClosesThePIT(t *testing.T) {
	f := &fakePIT{ids: []string{"a", "b", "c", "d"}}
	g := pinnedTestClient(t, f.handler(t))
	stop := errors.New("stop")
	err := g.ScanIDs(context.Background(), 2, func(ids []string) error { return stop })
	if err != stop {
		t.Fatalf("err %v, want the callback's", err)
	}
	if len(f.bodies) != 1 || len(f.closed) != 1 {
		t.Fatalf("pages %d, closed %v", len(f.bodies), f.closed)
	}
	// A canceled scan closes it too, with a context of its own.
	f2 := &fakePIT{ids: []string{"a", "b", "c", "d"}}
	g2 := pinnedTestClient(t, f2.handler(t))
	ctx, cancel := context.WithCancel(context.Background())
	err = g2.ScanIDs(ctx, 2, func(ids []string) error { cancel(); return nil })
	if apierr.KindOf(err) != apierr.Canceled || len(f2.closed) != 1 {
		t.Fatalf("canceled scan: %v, closed %v", err, f2.closed)
	}
}

func TestScanRejectsBadPageSize(t *testing.T) {
	g := pinnedTestClient(t, func(w http.ResponseWriter, r *http.Request) { t.Errorf("request %s", r.URL) })
	for _, n := range []int{0, MaxScanPage + 1} {
		if err := g.ScanIDs(context.Background(), n, func([]string) error { return nil }); err == nil {
			t.Errorf("page size %d accepted", n)
		}
	}
}

func TestGetDocsReadsVersionsAndSkipsMissing(t *testing.T) {
	g := pinnedTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/gen-a/_mget" || !strings.Contains(r.URL.Query().Get("_source_excludes"), "image_embedding") {
			t.Errorf("unexpected %s", r.URL)
		}
		fmt.Fprint(w, `{"docs":[
			{"_id":"a","found":true,"_seq_no":7,"_primary_term":3,"_source":{"width":4,"metadata":{"n":12345678901234567},"created_at":"2026-01-02T03:04:05Z"}},
			{"_id":"b","found":false}]}`)
	})
	docs, err := g.GetDocs(context.Background(), []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 1 || docs[0].ID != "a" || docs[0].SeqNo != 7 || docs[0].PrimaryTerm != 3 || docs[0].Width != 4 ||
		docs[0].Metadata["n"] != json.Number("12345678901234567") || !docs[0].CreatedAt.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Fatalf("docs %+v", docs)
	}
	if _, err := g.GetDocs(context.Background(), nil); apierr.KindOf(err) != apierr.InvalidArgument {
		t.Fatalf("no ids: %v", err)
	}
}

func TestGetDocsFailsOnAnIndexError(t *testing.T) {
	g := pinnedTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"docs":[{"_id":"a","error":{"type":"index_not_found_exception","reason":"no such index [gen-a]"}}]}`)
	})
	if _, err := g.GetDocs(context.Background(), []string{"a"}); apierr.KindOf(err) != apierr.NotFound {
		t.Fatalf("want NotFound, got %v", err)
	}
}

func TestDeleteIfUnchangedOutcomes(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		want   DeleteResult
		kind   apierr.Kind
	}{
		{200, `{"result":"deleted"}`, Deleted, 0},
		{409, `{"error":{"type":"version_conflict_engine_exception","reason":"[x]: version conflict"},"status":409}`, Changed, 0},
		{404, `{"result":"not_found"}`, Gone, 0},
		{404, `{"error":{"type":"index_not_found_exception","reason":"no such index"},"status":404}`, "", apierr.NotFound},
		{409, `{"error":{"type":"other_exception","reason":"?"},"status":409}`, "", apierr.Conflict},
	} {
		g := pinnedTestClient(t, func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodDelete || r.URL.EscapedPath() != "/gen-a/_doc/x%2Fy" ||
				r.URL.Query().Get("if_seq_no") != "41" || r.URL.Query().Get("if_primary_term") != "2" {
				t.Errorf("unexpected %s %s", r.Method, r.URL)
			}
			w.WriteHeader(tc.status)
			fmt.Fprint(w, tc.body)
		})
		got, err := g.DeleteIfUnchanged(context.Background(), "x/y", 41, 2)
		if tc.want != "" && (err != nil || got != tc.want) {
			t.Errorf("%d %s: %q %v, want %q", tc.status, tc.body, got, err, tc.want)
		}
		if tc.want == "" && apierr.KindOf(err) != tc.kind {
			t.Errorf("%d %s: %v, want kind %s", tc.status, tc.body, err, tc.kind)
		}
	}
}

func TestCountRefreshesFirstAndTellsAMissingIndex(t *testing.T) {
	var log []string
	var countBody string
	g := pinnedTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		log = append(log, r.URL.Path)
		switch r.URL.Path {
		case "/gen-a/_refresh":
			fmt.Fprint(w, `{"_shards":{"total":1,"successful":1,"failed":0}}`)
		case "/gen-a/_count":
			b, _ := io.ReadAll(r.Body)
			countBody = string(b)
			fmt.Fprint(w, `{"count":42}`)
		case "/missing/_refresh":
			w.WriteHeader(404)
			fmt.Fprint(w, `{"error":{"type":"index_not_found_exception","reason":"no such index [missing]"},"status":404}`)
		default:
			t.Errorf("unexpected %s", r.URL)
		}
	})
	n, err := g.Count(context.Background())
	if err != nil || n != 42 || strings.Join(log, " ") != "/gen-a/_refresh /gen-a/_count" || countBody != "" {
		t.Fatalf("Count = %d, %v; requests %v body %q", n, err, log, countBody)
	}
	cut := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	if n, err := g.CountCreatedBefore(context.Background(), cut); err != nil || n != 42 ||
		countBody != `{"query":{"range":{"created_at":{"lt":"2026-03-04T05:06:07Z"}}}}` {
		t.Fatalf("CountCreatedBefore = %d, %v; body %s", n, err, countBody)
	}
	if n, found, err := g.CountIndex(context.Background(), "missing"); err != nil || found || n != 0 {
		t.Fatalf("CountIndex(missing) = %d, %v, %v", n, found, err)
	}
}
