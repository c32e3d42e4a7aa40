package gateway

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/service"
)

func (f *fakeService) Similar(_ context.Context, id string, q service.Query) ([]service.Hit, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id == "missing" {
		return nil, apierr.New(apierr.NotFound, "image_not_found", "image %q not found", id)
	}
	f.similarIDs = append(f.similarIDs, id)
	f.queries = append(f.queries, q)
	return []service.Hit{{ID: "copy", Score: 0.99}}, nil
}

func (f *fakeService) Exists(_ context.Context, ids []string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.existsIDs = append(f.existsIDs, ids)
	var found []string
	for _, id := range ids {
		if strings.HasPrefix(id, "yes") {
			found = append(found, id)
		}
	}
	return found, nil
}

func TestSimilar(t *testing.T) {
	h, svc, _ := newTestServer(t, nil)
	rec := do(h, httptest.NewRequest("GET", `/v1/images/abc/similar?k=3&min_score=0.5&num_candidates=30&filter=%7B%22tag%22%3A%22cat%22%7D`, nil))
	if rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var body struct {
		Hits []service.Hit
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body.Hits) != 1 || body.Hits[0].ID != "copy" {
		t.Fatalf("%s %v", rec.Body, err)
	}
	q := svc.queries[0]
	if svc.similarIDs[0] != "abc" || q.K != 3 || q.NumCandidates != 30 || *q.MinScore != 0.5 || q.Filter["tag"] != "cat" {
		t.Fatalf("asked %v %+v", svc.similarIDs, q)
	}
	// The defaults of the search routes.
	do(h, httptest.NewRequest("GET", "/v1/images/abc/similar", nil))
	if q := svc.queries[1]; q.K != config.Default().Search.DefaultK || q.NumCandidates != 0 || q.MinScore != nil {
		t.Fatalf("defaults %+v", q)
	}
	for _, tc := range []struct{ query, code string }{
		{"k=0", "invalid_k"},
		{"k=x", "invalid_k"},
		{"min_score=2", "invalid_min_score"},
		{"num_candidates=1", "invalid_num_candidates"},
		{"filter=%7B", "invalid_filter"},
		{"file=x", "unknown_field"},
	} {
		if got := errorCode(t, do(h, httptest.NewRequest("GET", "/v1/images/abc/similar?"+tc.query, nil)), 400); got != tc.code {
			t.Errorf("%s: code %q, want %q", tc.query, got, tc.code)
		}
	}
	if got := errorCode(t, do(h, httptest.NewRequest("GET", "/v1/images/missing/similar", nil)), 404); got != "image_not_found" {
		t.Fatalf("code %q", got)
	}
}

func TestExistsRoute(t *testing.T) {
	h, svc, _ := newTestServer(t, nil)
	rec := do(h, httptest.NewRequest("POST", "/v1/images/_exists", strings.NewReader(`{"ids":["yes1","no","yes2"]}`)))
	if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != `{"found":["yes1","yes2"]}` {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	// None found is an empty list, not null.
	rec = do(h, httptest.NewRequest("POST", "/v1/images/_exists", strings.NewReader(`{"ids":["no"]}`)))
	if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != `{"found":[]}` {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	many := make([]string, 1001)
	for i := range many {
		many[i] = "a"
	}
	tooMany, _ := json.Marshal(map[string][]string{"ids": many})
	for name, body := range map[string]string{
		"no ids":       `{"ids":[]}`,
		"missing":      `{}`,
		"null":         `{"ids":null}`,
		"too many":     string(tooMany),
		"bad id":       `{"ids":["ok","../etc"]}`,
		"unknown key":  `{"ids":["a"],"x":1}`,
		"not a list":   `{"ids":"a"}`,
		"not json":     `ids=a`,
		"number in it": `{"ids":[1]}`,
	} {
		rec := do(h, httptest.NewRequest("POST", "/v1/images/_exists", strings.NewReader(body)))
		if rec.Code != 400 {
			t.Errorf("%s: status %d %s", name, rec.Code, rec.Body)
		}
	}
	if len(svc.existsIDs) != 2 {
		t.Fatalf("invalid requests reached the service: %v", svc.existsIDs)
	}
}

func TestIngestNearDuplicates(t *testing.T) {
	h, svc, _ := newTestServer(t, func(c *config.Config) { c.Search.NearDuplicateThreshold = 0.9 })
	svc.items = func(ups []service.Upload) []service.IngestItem {
		return []service.IngestItem{
			{ID: "a", Result: service.Created, NearDuplicates: []service.Duplicate{{ID: "b", Score: 0.97}}},
			{ID: "c", Result: service.Exists},
			{ID: "d", Err: apierr.New(apierr.Unprocessable, "image_corrupt", "bad")},
		}
	}
	post := func(query string) *httptest.ResponseRecorder {
		body, ct := multipartBody(t, nil, map[string][]byte{"1": []byte("x"), "2": []byte("y"), "3": []byte("z")})
		req := httptest.NewRequest("POST", "/v1/images"+query, body)
		req.Header.Set("Content-Type", ct)
		return do(h, req)
	}
	rec := post("?near_duplicates=true")
	var got struct {
		Items []map[string]json.RawMessage
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != 201 || len(got.Items) != 3 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if d := string(got.Items[0]["near_duplicates"]); d != `[{"id":"b","score":0.97}]` {
		t.Errorf("created item: near_duplicates %s", d)
	}
	if d, ok := got.Items[1]["near_duplicates"]; !ok || string(d) != `[]` {
		t.Errorf("exists item without duplicates must carry [], got %s", d)
	}
	if _, ok := got.Items[2]["near_duplicates"]; ok {
		t.Errorf("failed item carries near_duplicates: %s", rec.Body)
	}
	if thr := svc.ingestOpts[0].NearDuplicates; thr == nil || *thr != 0.9 {
		t.Fatalf("threshold passed %v", thr)
	}

	// Not asked (absent or false): no lookup, no field.
	for _, q := range []string{"", "?near_duplicates=false"} {
		rec = post(q)
		if strings.Contains(rec.Body.String(), "near_duplicates") || svc.ingestOpts[len(svc.ingestOpts)-1].NearDuplicates != nil {
			t.Errorf("%q: %s", q, rec.Body)
		}
	}
	if got := errorCode(t, post("?near_duplicates=maybe"), 400); got != "invalid_near_duplicates" {
		t.Fatalf("code %q", got)
	}
	if n := len(svc.ingestOpts); n != 3 {
		t.Fatalf("a bad near_duplicates reached the service: %d calls", n)
	}
}
