//go:build integration

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tusou/tusou/client"
	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/embed"
	"github.com/tusou/tusou/internal/testutil"
	"github.com/tusou/tusou/preprocess"
	"github.com/tusou/tusou/triton"
)

// The acceptance tests of issue 9: `tusou models switch` on the real stack
// (Elasticsearch, Triton serving clip_image/clip_text versions 1 and 2, the
// originals' store), driven through the binary as an operator would.

// adminKey is the admin key of the gateways these tests start.
const adminKey = "e2e-admin-key-0123456789abcdef"

// generationVersion is the Triton model version of the local stack's two
// tiny generations.
var generationVersion = map[string]string{"a": "1", "b": "2"}

// genGateway is a configuration with the local stack's two generations,
// a (version 1, initial) and b (version 2), the admin API on, the
// generations polled every 200 ms, and the originals in the S3 server of
// `make up` under a prefix of the test's own. The same value starts the
// gateway again after a kill (same alias, same originals).
type genGateway struct {
	configPath string
	alias      string
}

// newGenGateway writes the configuration; extra is appended to the models
// section (e.g. backfill settings). The originals' prefix is emptied when
// the test ends.
func newGenGateway(t *testing.T, extra string) *genGateway {
	t.Helper()
	s3, err := testutil.LoadS3()
	if err != nil {
		t.Fatal(err)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	prefix := "e2e-models-" + hex.EncodeToString(rnd[:]) + "/"
	t.Cleanup(func() { removeS3Prefix(t, s3, prefix) })
	var b strings.Builder
	fmt.Fprintf(&b, "auth:\n  admin_keys: [%q]\n", adminKey)
	fmt.Fprintf(&b, "blobs:\n  backend: s3\n  s3:\n    endpoint: %q\n    bucket: %q\n    region: %q\n    access_key: %q\n    secret_key: %q\n    prefix: %q\n",
		s3.Endpoint, s3.Bucket, s3.Region, s3.AccessKey, s3.SecretKey, prefix)
	fmt.Fprintf(&b, "models:\n  initial: a\n  poll_interval: 200ms\n  max_staleness: 5s\n%s  generations:\n", extra)
	for _, g := range []string{"a", "b"} {
		v := generationVersion[g]
		fmt.Fprintf(&b, "    - name: %s\n      image_model: {version: %q}\n      text_model: {version: %q}\n", g, v, v)
	}
	mg := &genGateway{configPath: filepath.Join(t.TempDir(), "tusou.yaml")}
	if err := os.WriteFile(mg.configPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return mg
}

// start starts the gateway binary; the first start picks the alias, later
// ones reuse it. Every index of the alias is deleted when the test ends.
func (mg *genGateway) start(t *testing.T) *gateway {
	t.Helper()
	env := []string{"TUSOU_CONFIG=" + mg.configPath}
	if mg.alias != "" {
		env = append(env, "TUSOU_ELASTICSEARCH_INDEX="+mg.alias)
	}
	g := startBinary(t, env...)
	if mg.alias == "" {
		mg.alias = g.alias
		t.Cleanup(func() { deleteIndicesOf(g.alias) })
	}
	return g
}

// removeS3Prefix deletes every object under prefix in the local S3 server.
func removeS3Prefix(t *testing.T, s3 testutil.S3, prefix string) {
	c, err := minio.New(s3.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s3.AccessKey, s3.SecretKey, ""), Region: s3.Region})
	if err != nil {
		t.Errorf("S3 client: %v", err)
		return
	}
	ctx := context.Background()
	for obj := range c.ListObjects(ctx, s3.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			t.Errorf("listing %s: %v", prefix, obj.Err)
			return
		}
		if err := c.RemoveObject(ctx, s3.Bucket, obj.Key, minio.RemoveObjectOptions{}); err != nil {
			t.Errorf("removing %s: %v", obj.Key, err)
		}
	}
}

// modelsBin runs `tusou models ARGS -o json` against url and returns the
// exit status, the decoded final status (nil when stdout is not one) and
// stderr.
func modelsBin(t *testing.T, bin, url string, args ...string) (int, *client.ModelsStatus, string) {
	t.Helper()
	cmd := exec.Command(bin, append(append([]string{"models"}, args...), "-o", "json", "--url", url)...)
	cmd.Env = append(os.Environ(), "TUSOU_ADMIN_KEY="+adminKey)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var s client.ModelsStatus
	if json.Unmarshal(stdout.Bytes(), &s) != nil || s.Alias == "" {
		return code, nil, stderr.String()
	}
	return code, &s, stderr.String()
}

// statusJSON is s as the gateway sent it, for failure messages.
func statusJSON(s *client.ModelsStatus) string {
	if s == nil {
		return "<no status>"
	}
	var b bytes.Buffer
	if json.Compact(&b, s.Raw) != nil {
		return string(s.Raw)
	}
	return b.String()
}

// deleteIndicesOf deletes every index whose name starts with alias+"-":
// the generations' concrete indices, whichever aliases they carry now.
func deleteIndicesOf(alias string) {
	resp, err := http.Get(testutil.ESURL() + "/_cat/indices/" + alias + "-*?format=json&h=index")
	if err != nil {
		return
	}
	defer resp.Body.Close()
	var rows []struct{ Index string }
	json.NewDecoder(resp.Body).Decode(&rows)
	for _, r := range rows {
		req, _ := http.NewRequest(http.MethodDelete, testutil.ESURL()+"/"+r.Index, nil)
		if r, err := http.DefaultClient.Do(req); err == nil {
			r.Body.Close()
		}
	}
}

// storedVectors reads the image vectors of ids from a concrete index
// (ids it lacks are absent from the map).
func storedVectors(t *testing.T, index string, ids []string) map[string][]float32 {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"ids": ids})
	resp, err := http.Post(testutil.ESURL()+"/"+index+"/_mget?_source_includes=image_embedding", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Docs []struct {
			ID     string `json:"_id"`
			Found  bool   `json:"found"`
			Source struct {
				Vector []float32 `json:"image_embedding"`
			} `json:"_source"`
		} `json:"docs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("mget %s: %d %v", index, resp.StatusCode, err)
	}
	v := map[string][]float32{}
	for _, d := range out.Docs {
		if !d.Found {
			continue
		}
		if len(d.Source.Vector) == 0 {
			t.Fatalf("%s/%s: no image_embedding in _source (elasticsearch.exclude_vector_from_source?)", index, d.ID)
		}
		v[d.ID] = d.Source.Vector
	}
	return v
}

// docCount is a concrete index's document count after a refresh.
func docCount(t *testing.T, index string) int {
	t.Helper()
	if r, err := http.Post(testutil.ESURL()+"/"+index+"/_refresh", "", nil); err == nil {
		r.Body.Close()
	}
	var c struct{ Count int }
	if st := getJSON(t, testutil.ESURL()+"/"+index+"/_count", &c); st != 200 {
		t.Fatalf("count %s: %d", index, st)
	}
	return c.Count
}

// indexIDs is the sorted ids of every document of a concrete index (at
// most 10,000) after a refresh.
func indexIDs(t *testing.T, index string) []string {
	t.Helper()
	docCount(t, index) // refreshes
	resp, err := http.Post(testutil.ESURL()+"/"+index+"/_search", "application/json",
		strings.NewReader(`{"size":10000,"_source":false,"query":{"match_all":{}}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Hits struct {
			Hits []struct {
				ID string `json:"_id"`
			} `json:"hits"`
		} `json:"hits"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("ids of %s: %d %v", index, resp.StatusCode, err)
	}
	ids := make([]string, 0, len(out.Hits.Hits))
	for _, h := range out.Hits.Hits {
		ids = append(ids, h.ID)
	}
	slices.Sort(ids)
	return ids
}

// aliasIndices is the concrete indices behind an alias (none: nil).
func aliasIndices(t *testing.T, alias string) []string {
	t.Helper()
	var m map[string]any
	switch st := getJSON(t, testutil.ESURL()+"/_alias/"+alias, &m); st {
	case 200:
	case 404:
		return nil
	default:
		t.Fatalf("GET /_alias/%s: %d", alias, st)
	}
	return slices.Sorted(maps.Keys(m))
}

// imageInfo is GET /v1/images/{id}.
type imageInfo struct {
	ID           string         `json:"id"`
	SHA256       string         `json:"sha256"`
	ContentType  string         `json:"content_type"`
	Width        int            `json:"width"`
	Height       int            `json:"height"`
	Bytes        int64          `json:"bytes"`
	Metadata     map[string]any `json:"metadata"`
	ModelVersion string         `json:"model_version"`
	CreatedAt    time.Time      `json:"created_at"`
}

// sameImage reports whether two answers describe the same image, apart
// from the model that embedded it.
func sameImage(x, y imageInfo) bool {
	return x.ID == y.ID && x.SHA256 == y.SHA256 && x.ContentType == y.ContentType && x.Width == y.Width &&
		x.Height == y.Height && x.Bytes == y.Bytes && x.CreatedAt.Equal(y.CreatedAt) && reflect.DeepEqual(x.Metadata, y.Metadata)
}

func getImage(t *testing.T, url, id string) (imageInfo, int) {
	t.Helper()
	var img imageInfo
	st := getJSON(t, url+"/v1/images/"+id, &img)
	return img, st
}

func getBytes(t *testing.T, u string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// freshEmbedder embeds images in this process as generation gen of the
// local stack does: its version of clip_image on the real Triton, after the
// gateway's own preprocessing.
func freshEmbedder(t *testing.T, gen string) *embed.Images {
	t.Helper()
	cfg := config.Default()
	v := generationVersion[gen]
	cfg.Models.Generations = []config.Generation{{Name: gen, ImageModel: config.ModelRef{Version: v}, TextModel: config.ModelRef{Version: v}}}
	g := cfg.ResolvedGenerations()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tc, err := triton.Dial(ctx, cfg.Triton, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	pre, err := preprocess.New(g.Preprocess)
	if err != nil {
		t.Fatal(err)
	}
	return embed.NewImages(pre, triton.NewImageEncoderFor(tc, g.Image), pre.TensorLen(), embed.NewLimiter(2, 1<<16, func() {}))
}

// checkVectors asserts that index holds, for every id of originals, the
// vector emb computes from the original now (cosine >= 0.9999), and
// returns the lowest cosine.
func checkVectors(t *testing.T, index string, originals map[string][]byte, emb *embed.Images, what string) float64 {
	t.Helper()
	ids := slices.Sorted(maps.Keys(originals))
	stored := storedVectors(t, index, ids)
	ctx := context.Background()
	lowest := 1.0
	for _, id := range ids {
		if stored[id] == nil {
			t.Fatalf("%s: %s is not in %s", what, id, index)
		}
		want, _, err := emb.Embed(ctx, originals[id])
		if err != nil {
			t.Fatal(err)
		}
		c := testutil.Cosine(stored[id], want)
		if c < 0.9999 {
			t.Fatalf("%s: %s's vector in %s vs a fresh embedding of its original: cosine %.6f, want >= 0.9999", what, id, index, c)
		}
		lowest = min(lowest, c)
	}
	return lowest
}

// switchLoad is traffic against gateways while a switch runs: searchers
// (text, and image searches with indexed images), ingesters of new images
// and a deleter. It counts what went wrong and records every acknowledged
// ingest and delete.
type switchLoad struct {
	searches, failedSearches, emptySearches atomic.Int64
	textSearches, imageSearches             atomic.Int64
	failedIngests, failedDeletes            atomic.Int64
	// crossGeneration counts image searches answered from the other
	// generation's index; selfMissed those whose first hit was not the
	// query image.
	crossGeneration, selfMissed atomic.Int64

	mu      sync.Mutex
	acked   map[string]ackedIngest
	deleted []string // acknowledged deletes
	errs    []string
}

// ackedIngest is what an acknowledged ingest stored.
type ackedIngest struct {
	data     []byte
	metadata map[string]any
}

func (l *switchLoad) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, time.Now().UTC().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
	}
}

// run starts searchers searchers (half text, half image searches with
// the images of queries) and ingesters ingesters, spread over the gateways
// at urls, and one deleter on the last gateway that deletes the images
// deletes one by one; the returned function stops them and waits for them.
// Nothing is retried: one refused request is one failure. Stopping lets
// every request in flight finish, so each ingest or delete the gateways
// did was acknowledged and recorded.
func (l *switchLoad) run(t *testing.T, urls []string, queries map[string][]byte, searchers, ingesters int, deletes []string) func() {
	t.Helper()
	var clients []*client.Client
	for _, u := range urls {
		c, err := client.New(u, client.WithRetry(client.Retry{MaxAttempts: 1}))
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	l.acked = map[string]ackedIngest{}
	// Each request gets a minute: a gateway that hangs fails the test
	// rather than stopping it.
	ctx := context.Background()
	queryIDs := slices.Sorted(maps.Keys(queries))
	var stopping atomic.Bool
	var wg sync.WaitGroup
	for i := range searchers {
		c := clients[i/2%len(clients)] // a text and an image searcher per gateway
		wg.Go(func() {
			for n := 0; !stopping.Load(); n++ {
				var res *client.SearchResponse
				var err error
				kind, self := "text", ""
				rctx, cancel := context.WithTimeout(ctx, time.Minute)
				if i%2 == 0 {
					res, err = c.SearchText(rctx, "a photo of a trip", client.Query{K: 10})
				} else {
					kind, self = "image", queryIDs[(n*7+i)%len(queryIDs)]
					res, err = c.SearchImage(rctx, queries[self], client.Query{K: 10})
				}
				cancel()
				l.searches.Add(1)
				if kind == "text" {
					l.textSearches.Add(1)
				} else {
					l.imageSearches.Add(1)
				}
				switch {
				case err != nil:
					l.failedSearches.Add(1)
					l.fail("%s search: %v", kind, err)
				case len(res.Hits) == 0:
					l.emptySearches.Add(1)
					l.fail("%s search: no hits", kind)
				case self != "" && res.Hits[0].Score < 0.9:
					// The images of one generation are all within a few
					// thousandths of cosine of each other (tiny random
					// models), the two generations' vectors about
					// orthogonal: a query embedded by one generation and
					// searched in the other's index scores near 0.
					l.crossGeneration.Add(1)
					l.fail("image search on %s with %s: top hit %s scores %.4f: query and index of different generations", c.URL(), self[:12], res.Hits[0].ID[:12], res.Hits[0].Score)
				case self != "" && res.Hits[0].ID != self:
					// Not the switch's doing: int8_hnsw misses an image
					// now and then when single-image ingests leave many
					// tiny segments (seen without any switch too).
					l.selfMissed.Add(1)
				}
			}
		})
	}
	for w := range ingesters {
		c := clients[w%len(clients)]
		wg.Go(func() {
			for n := 0; !stopping.Load(); n++ {
				data := photo(t, 1_000_000+uint64(w)*100_000+uint64(n))
				md := map[string]any{"during_switch": fmt.Sprintf("w%d-%d", w, n), "writer": float64(w)}
				rctx, cancel := context.WithTimeout(ctx, time.Minute)
				resp, err := c.Ingest(rctx, []client.File{{Name: fmt.Sprintf("new-%d-%d.jpg", w, n), Data: data, Metadata: md}}, client.IngestOptions{})
				cancel()
				if err != nil || resp.Items[0].Error != nil || resp.Items[0].Result != client.ResultCreated {
					l.failedIngests.Add(1)
					if err == nil {
						err = fmt.Errorf("%+v", resp.Items[0])
					}
					l.fail("ingest: %v", err)
					continue
				}
				l.mu.Lock()
				l.acked[resp.Items[0].ID] = ackedIngest{data: data, metadata: md}
				l.mu.Unlock()
			}
		})
	}
	wg.Go(func() {
		url, hc := urls[len(urls)-1], &http.Client{Timeout: time.Minute}
		for _, id := range deletes {
			if stopping.Load() {
				return
			}
			time.Sleep(250 * time.Millisecond) // spread over the switch
			req, _ := http.NewRequest(http.MethodDelete, url+"/v1/images/"+id, nil)
			resp, err := hc.Do(req)
			if err != nil {
				l.failedDeletes.Add(1)
				l.fail("delete %s: %v", id, err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				l.failedDeletes.Add(1)
				l.fail("delete %s: %d", id, resp.StatusCode)
				continue
			}
			l.mu.Lock()
			l.deleted = append(l.deleted, id)
			l.mu.Unlock()
		}
	})
	return func() { stopping.Store(true); wg.Wait() }
}

// ingestOriginals writes n distinct photos (and photoFolder's three
// extras: a corrupt one, a text file, a duplicate), ingests the folder with
// `tusou ingest --metadata album=trip` and returns the originals by id and
// the ingest rate (files uploaded per second).
func ingestOriginals(t *testing.T, bin, url string, n int, seed uint64) (map[string][]byte, float64) {
	t.Helper()
	root, ids := photoFolder(t, n, seed)
	code, sum, stderr := ingestBin(t, bin, root, "--url", url, "--report", "", "--metadata", "album=trip")
	if code != 1 || sum.Indexed != n || sum.Failed != 1 { // 1: the folder's corrupt JPEG
		t.Fatalf("tusou ingest: exit %d %+v\n%s", code, sum, stderr)
	}
	originals := map[string][]byte{}
	for rel, id := range ids {
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		originals[id] = b
	}
	return originals, float64(sum.Indexed) / sum.ElapsedSeconds
}

// Issue 9's acceptance: 300 images under a, `tusou models switch --to b`
// while searches, ingests and deletes go to two gateways (the one running
// the switch, and a replica that learns of it only by polling the aliases):
// 0 failed searches, 0 empty, 0 lost ingests, every acknowledged delete
// gone, b's vectors are b's. Then rollback (a's vectors, and what changed
// during the switch, in a too), a switch again and a switch that is a no-op.
func TestModelSwitchUnderLoadE2E(t *testing.T) {
	mg := newGenGateway(t, "")
	g := mg.start(t)
	replica := mg.start(t)
	bin := binPath(g)
	originals, ingestRate := ingestOriginals(t, bin, g.url, 300, 7000)
	allIDs := slices.Sorted(maps.Keys(originals))

	code, st, stderr := modelsBin(t, bin, g.url, "status")
	if code != 0 || st == nil || st.Active != "a" || st.Next != "" || st.Generation("a") == nil || st.Generation("a").Documents != 300 ||
		st.Generation("b") == nil || st.Generation("b").Role != client.RoleUnused {
		t.Fatalf("status before the switch: exit %d %s\n%s", code, statusJSON(st), stderr)
	}
	indexA := st.Generation("a").Index
	if got := aliasIndices(t, g.alias); !slices.Equal(got, []string{indexA}) {
		t.Fatalf("alias %s on %v, want a's index %s", g.alias, got, indexA)
	}
	before := map[string]imageInfo{}
	for _, id := range allIDs {
		img, code := getImage(t, g.url, id)
		if code != 200 || img.ModelVersion != "1" || img.Metadata["album"] != "trip" {
			t.Fatalf("%s under a: GET %d %+v", id, code, img)
		}
		before[id] = img
	}
	beforeA := storedVectors(t, indexA, allIDs)

	// The switch, by the CLI, under load. 30 of the originals are deleted
	// during it; the others are the image queries.
	toDelete := allIDs[270:]
	queries := maps.Clone(originals)
	for _, id := range toDelete {
		delete(queries, id)
	}
	l := &switchLoad{}
	stop := l.run(t, []string{g.url, replica.url}, queries, 4, 2, toDelete)
	time.Sleep(500 * time.Millisecond) // the load is on before the switch starts
	switchStart := time.Now()
	code, st, stderr = modelsBin(t, bin, g.url, "switch", "--to", "b")
	switchWall := time.Since(switchStart)
	time.Sleep(500 * time.Millisecond) // and after it ended
	stop()
	t.Logf("switch a -> b under load: exit %d in %s; status %s", code, switchWall.Round(time.Millisecond), statusJSON(st))
	t.Logf("load during the switch: %d searches (%d text, %d image): %d failed, %d empty, %d answered by the other generation, %d not finding their image first (int8_hnsw recall); %d ingests acknowledged, %d failed; %d deletes acknowledged, %d failed; first errors %q",
		l.searches.Load(), l.textSearches.Load(), l.imageSearches.Load(), l.failedSearches.Load(), l.emptySearches.Load(), l.crossGeneration.Load(), l.selfMissed.Load(),
		len(l.acked), l.failedIngests.Load(), len(l.deleted), l.failedDeletes.Load(), l.errs)
	if code != 0 || st == nil || st.Active != "b" || st.Next != "" || st.Previous != "a" || st.Switch == nil ||
		st.Switch.State != client.SwitchDone || st.Switch.Failed != 0 || st.Switch.MissingOriginals != 0 {
		t.Fatalf("tusou models switch --to b: exit %d %s\n%s", code, statusJSON(st), stderr)
	}
	if !strings.Contains(stderr, "backfilling b: ") {
		t.Errorf("no backfill progress on stderr:\n%s", stderr)
	}
	if l.failedSearches.Load() != 0 || l.emptySearches.Load() != 0 || l.crossGeneration.Load() != 0 || l.failedIngests.Load() != 0 || l.failedDeletes.Load() != 0 {
		t.Errorf("during the switch: %d failed and %d empty searches, %d answered by the other generation, %d failed ingests, %d failed deletes; want none: %q",
			l.failedSearches.Load(), l.emptySearches.Load(), l.crossGeneration.Load(), l.failedIngests.Load(), l.failedDeletes.Load(), l.errs)
	}
	if l.textSearches.Load() == 0 || l.imageSearches.Load() == 0 || len(l.acked) == 0 || len(l.deleted) == 0 {
		t.Fatalf("the load did not run: %d text and %d image searches, %d ingests, %d deletes",
			l.textSearches.Load(), l.imageSearches.Load(), len(l.acked), len(l.deleted))
	}
	backfillRate := st.Switch.DocsPerSecond
	created := st.Switch.Created

	// The alias is on b's index; b holds every original not deleted and
	// every acknowledged ingest, with its metadata and its original; the
	// deleted images are gone, originals included.
	indexB := st.Generation("b").Index
	if got := aliasIndices(t, g.alias); indexB == indexA || !slices.Equal(got, []string{indexB}) {
		t.Fatalf("alias %s on %v, want b's index %s", g.alias, got, indexB)
	}
	if got := aliasIndices(t, g.alias+"-previous"); !slices.Equal(got, []string{indexA}) {
		t.Fatalf("alias %s-previous on %v, want a's index %s", g.alias, got, indexA)
	}
	if got := aliasIndices(t, g.alias+"-next"); got != nil {
		t.Fatalf("alias %s-next still on %v after the cut-over", g.alias, got)
	}
	all := maps.Clone(originals) // id → original of every image that must be there
	for _, id := range l.deleted {
		delete(all, id)
	}
	for id, a := range l.acked {
		all[id] = a.data
	}
	for _, u := range []string{g.url, replica.url} {
		for id, a := range l.acked {
			img, code := getImage(t, u, id)
			if code != 200 || img.ModelVersion != "2" || !reflect.DeepEqual(img.Metadata, a.metadata) {
				t.Fatalf("ingest %s acknowledged during the switch, under b (%s): GET %d %+v, want metadata %v", id, u, code, img, a.metadata)
			}
			if code, body := getBytes(t, u+"/v1/images/"+id+"/content"); code != 200 || !bytes.Equal(body, a.data) {
				t.Fatalf("ingest %s acknowledged during the switch: its original in the store: GET content %d, %d bytes, want the %d bytes sent", id, code, len(body), len(a.data))
			}
		}
		for _, id := range allIDs {
			img, code := getImage(t, u, id)
			if _, kept := all[id]; !kept {
				if code != 404 {
					t.Fatalf("%s was deleted during the switch, under b (%s): GET %d", id, u, code)
				}
				if code, _ := getBytes(t, u+"/v1/images/"+id+"/content"); code != 404 {
					t.Fatalf("%s was deleted during the switch: its original (%s): GET content %d", id, u, code)
				}
				continue
			}
			if code != 200 || img.ModelVersion != "2" || !sameImage(img, before[id]) {
				t.Fatalf("%s under b (%s): GET %d %+v; under a it was %+v", id, u, code, img, before[id])
			}
		}
	}
	wantIDs := slices.Sorted(maps.Keys(all))
	if got := indexIDs(t, indexB); !slices.Equal(got, wantIDs) {
		t.Fatalf("b holds %d documents, want exactly the %d originals not deleted and acknowledged ingests", len(got), len(wantIDs))
	}
	// (a is no longer written after the cut-over: the rollback below
	// brings it what changed since.)

	// b's vectors are a fresh embedding of each original by b's model
	// (version 2), and not a's.
	lowB := checkVectors(t, indexB, all, freshEmbedder(t, "b"), "after the switch")
	gotB := storedVectors(t, indexB, allIDs)
	highAB := -1.0
	for id, v := range gotB {
		highAB = max(highAB, testutil.Cosine(beforeA[id], v))
	}
	if highAB >= 0.9 {
		// (Also what lets the load tell an answer from the wrong
		// generation's index by its score.)
		t.Fatalf("an image's vectors under a and b are alike (cosine %.4f): the two generations are not different models", highAB)
	}
	t.Logf("b's vectors vs fresh version-2 embeddings of all %d images: min cosine %.7f; a vs b: max cosine %.4f", len(all), lowB, highAB)

	// Rollback: a again, with a's vectors, and with every change made
	// during the switch.
	code, st, stderr = modelsBin(t, bin, g.url, "rollback")
	t.Logf("rollback: exit %d; status %s", code, statusJSON(st))
	if code != 0 || st == nil || st.Active != "a" || st.Previous != "b" || st.Next != "" || st.Switch == nil || st.Switch.State != client.SwitchDone {
		t.Fatalf("tusou models rollback: exit %d %s\n%s", code, statusJSON(st), stderr)
	}
	if got := aliasIndices(t, g.alias); !slices.Equal(got, []string{indexA}) {
		t.Fatalf("after the rollback alias %s is on %v, want a's index %s", g.alias, got, indexA)
	}
	if got := indexIDs(t, indexA); !slices.Equal(got, wantIDs) {
		t.Fatalf("after the rollback a holds %d documents, want exactly the %d originals not deleted and acknowledged ingests", len(got), len(wantIDs))
	}
	afterA := storedVectors(t, indexA, allIDs)
	for id, v := range afterA {
		if c := testutil.Cosine(beforeA[id], v); c < 0.9999 {
			t.Fatalf("%s: a's vector after the rollback vs before the switch: cosine %.6f", id, c)
		}
	}
	// A sample of the originals and every ingest of the switch against
	// fresh version-1 embeddings.
	sample := map[string][]byte{}
	for i, id := range wantIDs {
		if _, ingested := l.acked[id]; ingested || i%10 == 0 {
			sample[id] = all[id]
		}
	}
	for id, a := range l.acked {
		if img, code := getImage(t, replica.url, id); code != 200 || img.ModelVersion != "1" || !reflect.DeepEqual(img.Metadata, a.metadata) {
			t.Fatalf("ingest %s acknowledged during the switch, after the rollback: GET %d %+v", id, code, img)
		}
	}
	lowA := checkVectors(t, indexA, sample, freshEmbedder(t, "a"), "after the rollback")
	t.Logf("a's vectors after the rollback vs fresh version-1 embeddings of %d images: min cosine %.7f", len(sample), lowA)

	// Switch to b again: it works (b's index was kept: nothing to embed);
	// once more: a no-op.
	code, st, stderr = modelsBin(t, bin, g.url, "switch", "--to", "b")
	t.Logf("second switch to b: exit %d; status %s", code, statusJSON(st))
	if code != 0 || st == nil || st.Active != "b" || st.Previous != "a" || st.Switch == nil || st.Switch.State != client.SwitchDone || st.Switch.Noop {
		t.Fatalf("second tusou models switch --to b: exit %d %s\n%s", code, statusJSON(st), stderr)
	}
	if got := aliasIndices(t, g.alias); !slices.Equal(got, []string{indexB}) {
		t.Fatalf("after the second switch alias %s is on %v, want b's index %s", g.alias, got, indexB)
	}
	if n := docCount(t, indexB); st.Switch.Created != 0 || n != len(wantIDs) {
		t.Fatalf("second switch: created %d, b holds %d; want 0 and %d", st.Switch.Created, n, len(wantIDs))
	}
	code, st, stderr = modelsBin(t, bin, g.url, "switch", "--to", "b")
	t.Logf("third switch to b: exit %d; status %s", code, statusJSON(st))
	if code != 0 || st == nil || st.Active != "b" || st.Switch == nil || st.Switch.State != client.SwitchDone || !st.Switch.Noop {
		t.Fatalf("tusou models switch --to b with b active: exit %d %s\n%s", code, statusJSON(st), stderr)
	}
	if got := aliasIndices(t, g.alias); !slices.Equal(got, []string{indexB}) || docCount(t, indexB) != len(wantIDs) {
		t.Fatalf("after the no-op switch alias %s is on %v, want %s", g.alias, got, indexB)
	}
	t.Logf("THROUGHPUT (under load: 4 searchers, 2 ingesters, 1 deleter over 2 gateways): switch backfill %.1f docs/s (%d created; gateway's docs_per_second), whole switch %s; tusou ingest of the same 300 originals into a fresh alias %.1f img/s; backfill/ingest %.2f",
		backfillRate, created, switchWall.Round(time.Millisecond), ingestRate, backfillRate/ingestRate)
}

// A gateway killed in the middle of a backfill and started again: the
// switch shows as interrupted, run again it resumes (what the first run
// created is skipped, not embedded again), and every document is present
// exactly once.
func TestModelSwitchResumesAfterKillE2E(t *testing.T) {
	// Small pages: the counters move by 10 documents, so the kill lands
	// mid-way.
	mg := newGenGateway(t, "  backfill: {workers: 2, page_size: 10}\n")
	g := mg.start(t)
	bin := binPath(g)
	originals, _ := ingestOriginals(t, bin, g.url, 300, 9000)
	wantIDs := slices.Sorted(maps.Keys(originals))

	code, st, stderr := modelsBin(t, bin, g.url, "switch", "--to", "b", "--detach")
	if code != 0 || st == nil || st.Switch == nil || !st.Switch.Running || st.Switch.To != "b" {
		t.Fatalf("tusou models switch --to b --detach: exit %d %s\n%s", code, statusJSON(st), stderr)
	}
	c, err := client.New(g.url, client.WithAdminKey(adminKey))
	if err != nil {
		t.Fatal(err)
	}
	var createdAtKill int64
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		s, err := c.ModelsStatus(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if s.Switch == nil || s.Switch.Finished() || time.Now().After(deadline) {
			t.Fatalf("the switch ended (or stalled) before it could be killed: %s", statusJSON(s))
		}
		if s.Switch.Created >= 60 {
			createdAtKill = s.Switch.Created
			break
		}
	}
	// The running switch shows in /metrics.
	if code, m := getBytes(t, g.url+"/metrics"); code != 200 || !bytes.Contains(m, []byte("\ntusou_models_switch_running 1\n")) {
		t.Errorf("/metrics while the switch runs: %d, no tusou_models_switch_running 1", code)
	}
	if err := g.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	g.cmd.Wait()
	indexB := ""
	for _, idx := range aliasIndices(t, mg.alias+"-next") {
		indexB = idx
	}
	partial := docCount(t, indexB)
	t.Logf("killed the gateway with %d created (status), b's index %s holds %d of 300", createdAtKill, indexB, partial)
	if partial < int(createdAtKill) || partial >= 300 {
		t.Fatalf("b holds %d documents after the kill, want at least the %d created and fewer than 300", partial, createdAtKill)
	}

	g2 := mg.start(t)
	code, st, stderr = modelsBin(t, bin, g2.url, "status")
	t.Logf("status after the restart: %s", statusJSON(st))
	if code != 0 || st == nil || st.Active != "a" || st.Next != "b" || st.Switch == nil || st.Switch.State != client.SwitchInterrupted ||
		st.Switch.To != "b" || st.Switch.Running || st.Generation("b").Index != indexB {
		t.Fatalf("tusou models status after the restart: exit %d %s\n%s", code, statusJSON(st), stderr)
	}
	code, st, stderr = modelsBin(t, bin, g2.url, "switch", "--to", "b")
	t.Logf("resumed switch: exit %d; status %s", code, statusJSON(st))
	if code != 0 || st == nil || st.Active != "b" || st.Switch == nil || st.Switch.State != client.SwitchDone {
		t.Fatalf("tusou models switch --to b after the restart: exit %d %s\n%s", code, statusJSON(st), stderr)
	}
	if st.Switch.Skipped < createdAtKill || st.Switch.Skipped < int64(partial) || st.Switch.Created+st.Switch.Skipped != 300 {
		t.Fatalf("the resumed switch created %d and skipped %d; the first run had created %d (%d in b): it did not resume",
			st.Switch.Created, st.Switch.Skipped, createdAtKill, partial)
	}
	if got := aliasIndices(t, mg.alias); !slices.Equal(got, []string{indexB}) {
		t.Fatalf("alias %s on %v, want b's index %s", mg.alias, got, indexB)
	}
	indexA := st.Generation("a").Index
	if gotB, gotA := indexIDs(t, indexB), indexIDs(t, indexA); !slices.Equal(gotB, wantIDs) || !slices.Equal(gotA, wantIDs) {
		t.Fatalf("b holds %d documents, a %d: want the 300 originals exactly, each once", len(gotB), len(gotA))
	}
	if n := docCount(t, indexB); n != 300 {
		t.Fatalf("b's count %d, want 300", n)
	}
	low := checkVectors(t, indexB, originals, freshEmbedder(t, "b"), "after the resumed switch")
	t.Logf("killed at %d created; the resumed switch skipped %d and created %d; b holds each of the 300 once; min cosine vs fresh version-2 embeddings %.7f",
		createdAtKill, st.Switch.Skipped, st.Switch.Created, low)
}

// The backfill's throughput against `tusou ingest` of the same originals,
// on a quiet gateway, in one run (the numbers of issue 9's note), with the
// switch's phases timed by polling its status.
func TestModelSwitchThroughputE2E(t *testing.T) {
	mg := newGenGateway(t, "")
	g := mg.start(t)
	bin := binPath(g)
	_, ingestRate := ingestOriginals(t, bin, g.url, 300, 11000)
	c, err := client.New(g.url, client.WithAdminKey(adminKey))
	if err != nil {
		t.Fatal(err)
	}
	code, st, stderr := modelsBin(t, bin, g.url, "switch", "--to", "b", "--detach")
	if code != 0 || st == nil || st.Switch == nil || !st.Switch.Running {
		t.Fatalf("tusou models switch --to b --detach: exit %d %s\n%s", code, statusJSON(st), stderr)
	}
	start := time.Now()
	phases := map[string]time.Duration{} // state → when it was first seen
	var timeline []string
	for deadline := start.Add(90 * time.Second); ; time.Sleep(25 * time.Millisecond) {
		if st, err = c.ModelsStatus(context.Background()); err != nil {
			t.Fatal(err)
		}
		sw := st.Switch
		if _, seen := phases[sw.State]; !seen {
			phases[sw.State] = time.Since(start)
			timeline = append(timeline, fmt.Sprintf("%s at %.2fs (created %d)", sw.State, time.Since(start).Seconds(), sw.Created))
		}
		if sw.Finished() || time.Now().After(deadline) {
			break
		}
	}
	sw := st.Switch
	if st.Active != "b" || sw.State != client.SwitchDone || sw.Created != 300 {
		t.Fatalf("the switch to b: %s", statusJSON(st))
	}
	code, m := getBytes(t, g.url+"/metrics")
	for _, want := range []string{"\ntusou_models_switch_running 0\n", "\ntusou_models_switches_total{outcome=\"done\"} 1\n",
		"\ntusou_models_switch_documents_total{result=\"created\"} 300\n"} {
		if code != 200 || !bytes.Contains(m, []byte(want)) {
			t.Errorf("/metrics after the switch: %d, no %q", code, strings.TrimSpace(want))
		}
	}
	whole := sw.FinishedAt.Sub(sw.StartedAt)
	copying := phases[client.SwitchDone] - phases[client.SwitchBackfilling] // backfill to done, without the propagation wait
	t.Logf("switch phases (polled every 25 ms): %s", strings.Join(timeline, ", "))
	t.Logf("THROUGHPUT (quiet): switch backfill %.1f docs/s (final status docs_per_second, %d created); backfilling..done %s = %.1f docs/s; whole switch %s incl. propagation = %.1f docs/s; tusou ingest of the same 300 originals %.1f img/s; backfill/ingest %.2f (docs_per_second) %.2f (backfilling..done)",
		sw.DocsPerSecond, sw.Created, copying.Round(time.Millisecond), float64(sw.Created)/copying.Seconds(), whole.Round(time.Millisecond),
		float64(sw.Created)/whole.Seconds(), ingestRate, sw.DocsPerSecond/ingestRate, float64(sw.Created)/copying.Seconds()/ingestRate)
}
