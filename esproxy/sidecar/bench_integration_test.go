//go:build integration && bench

// The sidecar-versus-native ingest benchmark: it asserts nothing a change
// could break, it measures, so it runs in `make bench` (-tags 'integration
// bench'), not in every `make test`.
package sidecar_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tusou/tusou/app"
	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/esproxy"
	"go.uber.org/zap"
)

// TestBulkThroughputVersusNative ingests the same images through the
// sidecar (_bulk, base64) and through the native API (multipart POST
// /v1/images) in one run and logs images per second for both. Both paths
// skip the refresh wait (refresh=false) so the numbers compare embedding and
// indexing, not the refresh interval. SIDECAR_BENCH_IMAGES sets the image
// count (default 64; `make bench` uses more) and SIDECAR_BENCH_ROUNDS the
// rounds (default 3).
func TestBulkThroughputVersusNative(t *testing.T) {
	read := reader(t)
	n, rounds := 64, 3
	if v, err := strconv.Atoi(os.Getenv("SIDECAR_BENCH_IMAGES")); err == nil && v > 0 {
		n = v
	}
	if v, err := strconv.Atoi(os.Getenv("SIDECAR_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	const chunk, parallel = 64, 2
	fx := loadFixtures(t)
	s := startSidecar(t, nil)

	// The native gateway, on the same Triton and Elasticsearch.
	cfg := config.Default()
	cfg.Elasticsearch.Index = randomName("tusou-sc-native-")
	cfg.Elasticsearch.IndexOptions.Type = "hnsw"
	cfg.Elasticsearch.Replicas = 0
	cfg.Elasticsearch.Refresh = esproxy.RefreshFalse
	cfg.Blobs.Dir = ""
	cfg.Text.TokenizerPath = tokenizerPath()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	bctx, bcancel := context.WithTimeout(ctx, 60*time.Second)
	a, err := app.Build(bctx, cfg, zap.NewNop(), "test")
	bcancel()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	done := make(chan error, 1)
	go func() { done <- a.ServeListener(ctx, ln) }()
	native := "http://" + ln.Addr().String()
	index := randomName("tusou-sc-bench-")
	t.Cleanup(func() {
		cancel()
		<-done
		deleteIndex(index)
		deleteAlias(cfg.Elasticsearch.Index)
	})
	es := goClient(t, s.url, false)
	read(es.Indices.Create(index, es.Indices.Create.WithBody(strings.NewReader(mapping))))

	images := make([]fixture, n)
	for i := range images {
		images[i] = fx[i%len(fx)]
	}
	// Request bodies are built before the clock starts: the comparison is
	// of the two server paths, not of how fast a test encodes a body.
	type request struct {
		contentType string
		body        []byte
	}
	nativeBodies := func(imgs []fixture) []request {
		var out []request
		for i := 0; i < len(imgs); i += chunk {
			var buf bytes.Buffer
			w := multipart.NewWriter(&buf)
			for j, f := range imgs[i:min(i+chunk, len(imgs))] {
				fw, _ := w.CreateFormFile("file", fmt.Sprintf("%d-%s", j, f.File))
				fw.Write(f.data)
			}
			w.Close()
			out = append(out, request{w.FormDataContentType(), buf.Bytes()})
		}
		return out
	}
	seq := 0
	sidecarBodies := func(imgs []fixture) []request {
		var out []request
		for i := 0; i < len(imgs); i += chunk {
			var buf bytes.Buffer
			for _, f := range imgs[i:min(i+chunk, len(imgs))] {
				seq++
				// base64 needs no JSON escaping.
				fmt.Fprintf(&buf, "{\"index\":{\"_id\":\"b-%d\"}}\n{\"image_base64\":\"%s\",\"file\":%q}\n", seq, f.b64, f.File)
			}
			out = append(out, request{"application/x-ndjson", buf.Bytes()})
		}
		return out
	}
	sendNative := func(r request) error {
		resp, err := http.Post(native+"/v1/images", r.contentType, bytes.NewReader(r.body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 || bytes.Contains(body, []byte(`"errors":true`)) {
			return fmt.Errorf("native ingest %d: %.300s", resp.StatusCode, body)
		}
		return nil
	}
	sendSidecar := func(r request) error {
		res, err := es.Bulk(bytes.NewReader(r.body), es.Bulk.WithIndex(index), es.Bulk.WithRefresh("false"))
		if err != nil {
			return err
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || bytes.Contains(body, []byte(`"errors":true`)) {
			return fmt.Errorf("sidecar bulk %d: %.300s", res.StatusCode, body)
		}
		return nil
	}
	run := func(send func(request) error, reqs []request) (time.Duration, error) {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, len(reqs))
		sem := make(chan struct{}, parallel)
		for _, r := range reqs {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if err := send(r); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		return time.Since(start), <-errs
	}
	// Warm both paths (ONNX sessions, connections) before timing.
	if _, err := run(sendNative, nativeBodies(fx[:8])); err != nil {
		t.Fatal(err)
	}
	if _, err := run(sendSidecar, sidecarBodies(fx[:8])); err != nil {
		t.Fatal(err)
	}
	// Rounds alternate which path goes first, so neither always runs on a
	// warmer (or busier) machine; the median round is reported because the
	// shared 2-core machine makes single rounds noisy.
	rates := map[string][]float64{}
	for r := 0; r < rounds; r++ {
		paths := []struct {
			name string
			send func(request) error
			reqs []request
		}{{"native", sendNative, nativeBodies(images)}, {"sidecar", sendSidecar, sidecarBodies(images)}}
		if r%2 == 1 {
			paths[0], paths[1] = paths[1], paths[0]
		}
		for _, p := range paths {
			d, err := run(p.send, p.reqs)
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			rates[p.name] = append(rates[p.name], float64(n)/d.Seconds())
		}
	}
	median := func(xs []float64) float64 {
		sort.Float64s(xs)
		return xs[len(xs)/2]
	}
	t.Logf("rounds (img/s): native %.1f, sidecar %.1f", rates["native"], rates["sidecar"])
	nativeRate, sidecarRate := median(rates["native"]), median(rates["sidecar"])
	t.Logf("throughput, %d images per round, median of %d rounds (chunks of %d, %d in parallel): native /v1/images %.1f img/s, sidecar _bulk %.1f img/s, sidecar/native %.2f",
		n, rounds, chunk, parallel, nativeRate, sidecarRate, sidecarRate/nativeRate)
}
