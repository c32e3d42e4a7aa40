//go:build integration

package app

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestSearchableOnAcknowledgement: on the real stack, with Elasticsearch's
// own periodic refresh switched off (so only the gateway's coalesced refresh
// can make anything searchable), 32 concurrent single-image ingests are each
// returned by kNN the moment their answer arrives, and each delete is gone
// from kNN the moment it returns; refresh=false answers without a refresh.
func TestSearchableOnAcknowledgement(t *testing.T) {
	s := startGateway(t, nil)
	disablePeriodicRefresh(t, s.alias)

	const n = 32
	imgs := make([][]byte, n)
	for i := range imgs {
		imgs[i] = distinctJPEG(t, uint64(i))
	}
	var wg sync.WaitGroup
	ids := make([]string, n)
	errs := make([]error, n)
	before := refreshCounts(t, s)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tag := fmt.Sprintf("w%02d", i)
			ids[i], errs[i] = ingestOne(s.url+"/v1/images?metadata="+metadataParam(tag), imgs[i])
			if errs[i] != nil {
				return
			}
			// No refresh, no retry: visible now or the promise is broken.
			if hits, err := searchTagged(s.url, imgs[i], tag); err != nil {
				errs[i] = err
			} else if len(hits) != 1 || hits[0] != ids[i] {
				errs[i] = fmt.Errorf("%s: kNN right after the ingest returned %v, want [%s]", tag, hits, ids[i])
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	after := refreshCounts(t, s)
	// Every writer waited for exactly one refresh; fewer refreshes than
	// writers is the coalescing (how many depends on timing, so it is logged).
	if got := after.writers - before.writers; got != n {
		t.Errorf("refresh writers histogram grew by %v, want %d", got, n)
	}
	t.Logf("%d concurrent ingests made searchable by %v refreshes", n, after.refreshes-before.refreshes)

	// refresh=false: stored, answered, not refreshed (the periodic refresh is
	// off, so it stays invisible until the next coalesced refresh).
	lazy := distinctJPEG(t, 1000)
	before = refreshCounts(t, s)
	lazyID, err := ingestOne(s.url+"/v1/images?refresh=false&metadata="+metadataParam("lazy"), lazy)
	if err != nil {
		t.Fatal(err)
	}
	if got := refreshCounts(t, s); got.refreshes != before.refreshes || got.writers != before.writers {
		t.Errorf("refresh=false refreshed: %+v -> %+v", before, got)
	}
	if hits, err := searchTagged(s.url, lazy, "lazy"); err != nil || len(hits) != 0 {
		t.Errorf("refresh=false document visible without a refresh (%v %v): Elasticsearch refreshed on its own?", hits, err)
	}
	if got := esCount(t, s.alias); got != n {
		t.Errorf("count %d before any refresh, want %d", got, n)
	}

	// Deletes: gone the moment DELETE returns. The first refresh they cause
	// also publishes the refresh=false document.
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tag := fmt.Sprintf("w%02d", i)
			req, _ := http.NewRequest(http.MethodDelete, s.url+"/v1/images/"+ids[i], nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs[i] = fmt.Errorf("delete %s: %d", tag, resp.StatusCode)
				return
			}
			if hits, err := searchTagged(s.url, imgs[i], tag); err != nil {
				errs[i] = err
			} else if len(hits) != 0 {
				errs[i] = fmt.Errorf("%s: kNN right after DELETE returned %v", tag, hits)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if hits, err := searchTagged(s.url, lazy, "lazy"); err != nil || len(hits) != 1 || hits[0] != lazyID {
		t.Errorf("refresh=false document after later refreshes: %v %v", hits, err)
	}
}

// disablePeriodicRefresh sets refresh_interval -1 on the indices behind the
// alias. An explicit value also turns off search-idle shards, whose first
// search would otherwise refresh and hide a missing refresh.
func disablePeriodicRefresh(t *testing.T, alias string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, esURL+"/"+alias+"/_settings",
		strings.NewReader(`{"index":{"refresh_interval":"-1"}}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("set refresh_interval: %d", resp.StatusCode)
	}
}

// distinctJPEG draws a small photo-like image unique to seed.
func distinctJPEG(t *testing.T, seed uint64) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	img := image.NewRGBA(image.Rect(0, 0, 96, 72))
	c0 := [3]float64{rng.Float64() * 255, rng.Float64() * 255, rng.Float64() * 255}
	c1 := [3]float64{rng.Float64() * 255, rng.Float64() * 255, rng.Float64() * 255}
	for y := range 72 {
		for x := range 96 {
			f := float64(x+y) / (96 + 72)
			px := [3]uint8{}
			for k := range 3 {
				px[k] = uint8(min(255, c0[k]*(1-f)+c1[k]*f+rng.Float64()*24))
			}
			img.Set(x, y, color.RGBA{px[0], px[1], px[2], 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func metadataParam(tag string) string { return `%7B%22tag%22%3A%22` + tag + `%22%7D` }

// ingestOne posts one raw JPEG and returns its id.
func ingestOne(url string, data []byte) (string, error) {
	resp, err := http.Post(url, "image/jpeg", bytes.NewReader(data))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out ingestResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", err
	}
	if resp.StatusCode != 201 || len(out.Items) != 1 || out.Items[0].Result != "created" {
		return "", fmt.Errorf("ingest: status %d %+v", resp.StatusCode, out)
	}
	return out.Items[0].ID, nil
}

// searchTagged runs a kNN image search restricted to one writer's tag.
func searchTagged(base string, data []byte, tag string) ([]string, error) {
	resp, err := http.Post(base+"/v1/search/image?k=5&filter="+`%7B%22tag%22%3A%22`+tag+`%22%7D`, "image/jpeg", bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out searchResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		return nil, fmt.Errorf("search %s: status %d %v", tag, resp.StatusCode, err)
	}
	ids := []string{}
	for _, h := range out.Hits {
		ids = append(ids, h.ID)
	}
	return ids, nil
}

type refreshCount struct{ refreshes, writers float64 }

// refreshCounts reads the refresh counter and the writers histogram's sum.
func refreshCounts(t *testing.T, s *stack) refreshCount {
	t.Helper()
	mfs, err := s.app.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var c refreshCount
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "tusou_es_requests_total":
				for _, l := range m.GetLabel() {
					if l.GetName() == "op" && l.GetValue() == "refresh" {
						c.refreshes += m.GetCounter().GetValue()
					}
				}
			case "tusou_es_refresh_writers":
				c.writers += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return c
}
