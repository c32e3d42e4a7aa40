// Command ingest is the single-file client of the ingest benchmark (bench/ingest/run.sh): it posts
// every JPEG of a folder to POST /v1/images as a raw image/jpeg body, one image per request, from
// -c concurrent clients, and prints one JSON line: images per second over the whole run and the
// latency distribution of the requests. Any answer other than 201 created fails the run: the
// benchmark must measure ingests that really happened.
//
//	go run ./bench/ingest -url http://127.0.0.1:18180 -dir .local/cache/bench-photos/ingest -c 8
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

type result struct {
	Pipeline    string  `json:"pipeline"`
	Concurrency int     `json:"concurrency"`
	Images      int     `json:"images"`
	Seconds     float64 `json:"seconds"`
	ImgPerS     float64 `json:"img_per_s"`
	P50ms       float64 `json:"p50_ms"`
	P90ms       float64 `json:"p90_ms"`
	P99ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
}

func main() {
	url := flag.String("url", "http://127.0.0.1:18180", "gateway base URL")
	dir := flag.String("dir", ".local/cache/bench-photos/ingest", "folder of JPEG photos")
	conc := flag.Int("c", 1, "concurrent clients, one request in flight each")
	query := flag.String("query", "", "query string added to POST /v1/images, e.g. refresh=false")
	flag.Parse()
	files, err := filepath.Glob(filepath.Join(*dir, "*.jpg"))
	if err != nil || len(files) == 0 {
		fail("no *.jpg in %s", *dir)
	}
	slices.Sort(files)
	// Read everything first: the client must not time the disk.
	bodies := make([][]byte, len(files))
	for i, f := range files {
		if bodies[i], err = os.ReadFile(f); err != nil {
			fail("%v", err)
		}
	}
	target := strings.TrimRight(*url, "/") + "/v1/images"
	if *query != "" {
		target += "?" + *query
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conc}, Timeout: 2 * time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	lat := make([]time.Duration, len(files))
	next := make(chan int)
	errs := make(chan error, *conc)
	var wg sync.WaitGroup
	start := time.Now()
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t0 := time.Now()
				if err := post(ctx, client, target, bodies[i]); err != nil {
					errs <- fmt.Errorf("%s: %w", filepath.Base(files[i]), err)
					cancel()
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
feed:
	for i := range files {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	wall := time.Since(start)
	select {
	case err := <-errs:
		fail("%v", err)
	default:
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return ms(lat[min(len(lat)-1, int(p*float64(len(lat))))]) }
	r := result{Pipeline: fmt.Sprintf("single-file c=%d", *conc), Concurrency: *conc, Images: len(files),
		Seconds: wall.Seconds(), ImgPerS: float64(len(files)) / wall.Seconds(),
		P50ms: q(0.50), P90ms: q(0.90), P99ms: q(0.99), MaxMs: ms(lat[len(lat)-1])}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		fail("%v", err)
	}
}

func post(ctx context.Context, c *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "image/jpeg")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench/ingest: "+format+"\n", a...)
	os.Exit(1)
}
