//go:build integration

package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tusou/tusou/ingest"
	"github.com/tusou/tusou/internal/testutil"
)

// photo is a distinct real JPEG: random coloured blocks from seed.
func photo(t *testing.T, seed uint64) []byte {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 42))
	w, h := 96+r.IntN(160), 96+r.IntN(160)
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for by := 0; by < h; by += 16 {
		for bx := 0; bx < w; bx += 16 {
			c := color.RGBA{uint8(r.IntN(256)), uint8(r.IntN(256)), uint8(r.IntN(256)), 255}
			for y := by; y < min(by+16, h); y++ {
				for x := bx; x < min(bx+16, w); x++ {
					img.Set(x, y, c)
				}
			}
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// halfSize re-encodes a JPEG at half its width and height (2×2 box filter).
func halfSize(t *testing.T, b []byte) []byte {
	t.Helper()
	src, err := jpeg.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	r := src.Bounds()
	dst := image.NewRGBA(image.Rect(0, 0, r.Dx()/2, r.Dy()/2))
	for y := range r.Dy() / 2 {
		for x := range r.Dx() / 2 {
			var sum [3]uint32
			for _, d := range [][2]int{{0, 0}, {1, 0}, {0, 1}, {1, 1}} {
				cr, cg, cb, _ := src.At(r.Min.X+2*x+d[0], r.Min.Y+2*y+d[1]).RGBA()
				sum[0], sum[1], sum[2] = sum[0]+cr, sum[1]+cg, sum[2]+cb
			}
			dst.Set(x, y, color.RGBA{uint8(sum[0] / 4 >> 8), uint8(sum[1] / 4 >> 8), uint8(sum[2] / 4 >> 8), 255})
		}
	}
	var out bytes.Buffer
	if err := jpeg.Encode(&out, dst, &jpeg.Options{Quality: 85}); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func put(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// photoFolder writes n distinct photos in nested folders plus a corrupt
// JPEG, a text file and an exact duplicate. It returns the folder and the
// photos' ids by relative path.
func photoFolder(t *testing.T, n int, seed uint64) (string, map[string]string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "photos")
	ids := map[string]string{}
	for i := range n {
		rel := fmt.Sprintf("%d/trip-%d/p%03d.jpg", 2020+i%3, i%4, i)
		b := photo(t, seed+uint64(i))
		put(t, filepath.Join(root, rel), b)
		ids[rel] = sha(b)
	}
	whole := photo(t, seed+1000)
	put(t, filepath.Join(root, "2021/corrupt.jpg"), whole[:len(whole)*2/3]) // cut off mid-scan
	put(t, filepath.Join(root, "README.txt"), []byte("photos of the trip\n"))
	dup, _ := os.ReadFile(filepath.Join(root, "2020/trip-0/p000.jpg"))
	put(t, filepath.Join(root, "copies/p000-copy.jpg"), dup)
	return root, ids
}

// ingestBin runs `tusou ingest` and returns its exit status and JSON summary.
func ingestBin(t *testing.T, bin string, args ...string) (int, ingest.Summary, string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"ingest", "-o", "json", "--progress", "lines"}, args...)...)
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
	var s ingest.Summary
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatalf("summary is not JSON: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	return code, s, stderr.String()
}

func binPath(g *gateway) string { return g.cmd.Path }

func readReportLines(t *testing.T, p string) []ingest.ReportLine {
	t.Helper()
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var out []ingest.ReportLine
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if l == "" {
			continue
		}
		var rl ingest.ReportLine
		if err := json.Unmarshal([]byte(l), &rl); err != nil {
			t.Fatalf("report line %q: %v", l, err)
		}
		out = append(out, rl)
	}
	return out
}

func getJSON(t *testing.T, u string, v any) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		json.NewDecoder(resp.Body).Decode(v)
	}
	return resp.StatusCode
}

func TestIngestFolderE2E(t *testing.T) {
	g := startBinary(t)
	root, ids := photoFolder(t, 30, 1)
	report := filepath.Join(t.TempDir(), "report.jsonl")

	code, s, stderr := ingestBin(t, binPath(g), root, "--url", g.url, "--report", report, "--metadata", "album=trip", "--batch", "8")
	if code != 1 {
		t.Fatalf("exit %d, want 1 (one corrupt file); stderr:\n%s", code, stderr)
	}
	if s.Files != 33 || s.Indexed != 30 || s.Duplicates != 1 || s.Failed != 1 || s.NotImages != 1 || s.AlreadyIndexed != 0 || !s.Searchable {
		t.Fatalf("summary %+v", s)
	}
	lines := readReportLines(t, report)
	got := map[string]ingest.ReportLine{}
	for _, l := range lines {
		rel, _ := filepath.Rel(root, l.Path)
		got[rel] = l
	}
	// Which of two identical files is "the duplicate" depends on which was hashed first.
	a, b := "copies/p000-copy.jpg", "2020/trip-0/p000.jpg"
	if _, ok := got[a]; !ok {
		a, b = b, a
	}
	if len(lines) != 2 || got["2021/corrupt.jpg"].Error == nil || got["2021/corrupt.jpg"].Error.Code != "image_corrupt" ||
		got[a].Status != ingest.StatusDuplicate || got[a].DuplicateOf != filepath.Join(root, b) || got[a].ID != ids["2020/trip-0/p000.jpg"] {
		t.Fatalf("report %+v", lines)
	}
	// Searchable when the command exits: kNN finds all 30.
	body := strings.NewReader(`{"text":"trip","k":100}`)
	resp, err := http.Post(g.url+"/v1/search/text", "application/json", body)
	if err != nil {
		t.Fatal(err)
	}
	var hits struct{ Hits []struct{ ID string } }
	json.NewDecoder(resp.Body).Decode(&hits)
	resp.Body.Close()
	if len(hits.Hits) != 30 {
		t.Fatalf("kNN right after exit finds %d of 30", len(hits.Hits))
	}
	for rel, id := range ids {
		var img struct{ Metadata map[string]any }
		if st := getJSON(t, g.url+"/v1/images/"+id, &img); st != 200 {
			t.Fatalf("%s: GET %d", rel, st)
		}
		if rel == "2020/trip-0/p000.jpg" {
			rel = b // the copy that was not the duplicate was stored, with its own metadata
		}
		if img.Metadata["relative_path"] != rel || img.Metadata["image_name"] != filepath.Base(rel) || img.Metadata["album"] != "trip" {
			t.Fatalf("%s: metadata %v", rel, img.Metadata)
		}
	}

	// A completed folder again: nothing uploaded but the corrupt file.
	code2, s2, _ := ingestBin(t, binPath(g), root, "--url", g.url, "--report", report)
	if code2 != 1 || s2.AlreadyIndexed != 30 || s2.Indexed != 0 || s2.UploadedFiles != 1 || s2.Failed != 1 {
		t.Fatalf("rerun exit %d summary %+v", code2, s2)
	}
	// --report-duplicates: a half-size copy of an indexed photo lists it.
	orig, err := os.ReadFile(filepath.Join(root, "2020/trip-0/p000.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	dupDir := filepath.Join(t.TempDir(), "more")
	put(t, filepath.Join(dupDir, "p000-small.jpg"), halfSize(t, orig))
	code3, s3, stderr3 := ingestBin(t, binPath(g), dupDir, "--url", g.url, "--report", report, "--report-duplicates")
	if code3 != 0 || s3.Indexed != 1 || len(s3.NearDuplicates) != 1 {
		t.Fatalf("--report-duplicates: exit %d summary %+v\n%s", code3, s3, stderr3)
	}
	nd := s3.NearDuplicates[0].NearDuplicates
	if len(nd) == 0 || nd[0].ID != ids["2020/trip-0/p000.jpg"] || nd[0].Score < 0.9 {
		t.Fatalf("near-duplicates of the half-size copy: %+v; want the original (%s) first", nd, ids["2020/trip-0/p000.jpg"])
	}
	t.Logf("near-duplicates of the half-size copy: %+v", nd)
	if l := readReportLines(t, report); len(l) != 1 || l[0].Status != ingest.StatusNearDuplicates {
		t.Fatalf("report %+v", l)
	}

	t.Logf("first run %.2fs (%d files uploaded, %d requests); re-run of the completed folder %.2fs (%d uploaded): %.0f%% of the first",
		s.ElapsedSeconds, s.UploadedFiles, s.Requests, s2.ElapsedSeconds, s2.UploadedFiles, 100*s2.ElapsedSeconds/s.ElapsedSeconds)
}

// countingProxy sits between `tusou ingest` and the gateway. It records
// every file uploaded (by content hash) and every file acknowledged, in one
// sequence, and can hold ingest requests back without forwarding them.
type countingProxy struct {
	target *url.URL
	rp     *httputil.ReverseProxy

	mu       sync.Mutex
	seq      int
	uploads  map[string][]int // id → sequence numbers of forwarded uploads
	acks     map[string]int   // id → sequence number of the first acknowledgement
	found    map[string]bool  // ids the existence check answered as indexed
	pass     int              // ingest requests still let through; <0: all
	blocked  chan struct{}    // receives when a request is held back
	release  chan struct{}    // closed to forward the held requests
	inflight int              // forwarded requests not answered yet
}

func newCountingProxy(target string, pass int) *countingProxy {
	u, _ := url.Parse(target)
	return &countingProxy{target: u, rp: httputil.NewSingleHostReverseProxy(u), uploads: map[string][]int{},
		acks: map[string]int{}, found: map[string]bool{}, pass: pass, blocked: make(chan struct{}, 64),
		release: make(chan struct{})}
}

func (p *countingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/v1/images/_exists" {
		rec := httptest.NewRecorder()
		p.rp.ServeHTTP(rec, r)
		var answer struct{ Found []string }
		json.Unmarshal(rec.Body.Bytes(), &answer)
		p.mu.Lock()
		for _, id := range answer.Found {
			p.found[id] = true
		}
		p.mu.Unlock()
		copyResponse(w, rec)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/images" {
		p.rp.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	p.mu.Lock()
	hold := p.pass == 0
	if p.pass > 0 {
		p.pass--
	}
	p.mu.Unlock()
	if hold {
		p.blocked <- struct{}{}
		select {
		case <-r.Context().Done(): // never forwarded: the client went away
			return
		case <-p.release:
		}
	}
	ids := multipartIDs(r.Header.Get("Content-Type"), body)
	p.mu.Lock()
	p.seq++
	p.inflight++
	for _, id := range ids {
		p.uploads[id] = append(p.uploads[id], p.seq)
	}
	p.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := httptest.NewRecorder()
	p.rp.ServeHTTP(rec, r)
	defer func() {
		p.mu.Lock()
		p.inflight--
		p.mu.Unlock()
	}()
	var answer struct{ Items []struct{ ID, Result string } }
	json.Unmarshal(rec.Body.Bytes(), &answer)
	if copyResponse(w, rec) != nil {
		return // not delivered: not acknowledged
	}
	p.mu.Lock()
	p.seq++
	for _, it := range answer.Items {
		if _, seen := p.acks[it.ID]; !seen && (it.Result == "created" || it.Result == "exists") {
			p.acks[it.ID] = p.seq
		}
	}
	p.mu.Unlock()
}

func copyResponse(w http.ResponseWriter, rec *httptest.ResponseRecorder) error {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, err := w.Write(rec.Body.Bytes())
	return err
}

func multipartIDs(contentType string, body []byte) []string {
	_, params, _ := mime.ParseMediaType(contentType)
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	var ids []string
	for {
		part, err := mr.NextPart()
		if err != nil {
			return ids
		}
		if part.FormName() == "file" {
			b, _ := io.ReadAll(part)
			ids = append(ids, sha(b))
		}
	}
}

func TestIngestKilledThenResumedE2E(t *testing.T) {
	g := startBinary(t)
	root, ids := photoFolder(t, 40, 500)
	proxy := newCountingProxy(g.url, 3)
	srv := httptest.NewServer(proxy)
	defer srv.Close()

	// Run 1: three requests get through, then the next is held and the
	// process is killed (SIGKILL: no clean-up of any kind).
	cmd := exec.Command(binPath(g), "ingest", root, "--url", srv.URL, "--batch", "4", "--workers", "2", "--report", "")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-proxy.blocked:
	case <-time.After(5 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("no fourth request; output:\n%s", out.String())
	}
	cmd.Process.Kill()
	cmd.Wait()
	// Let the gateway finish what run 1 left in flight, so that run 2 sees
	// the final state (the property is about acknowledged files).
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		proxy.mu.Lock()
		n := proxy.inflight
		proxy.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests of run 1 still in flight", n)
		}
	}
	proxy.mu.Lock()
	ackedRun1 := len(proxy.acks)
	proxy.pass = -1
	proxy.mu.Unlock()
	if ackedRun1 == 0 || ackedRun1 >= 40 {
		t.Fatalf("run 1 acknowledged %d files; want some, not all", ackedRun1)
	}

	// Run 2 continues.
	code, s, stderr := ingestBin(t, binPath(g), root, "--url", srv.URL, "--batch", "4", "--workers", "2", "--report", "")
	if code != 1 || s.Failed != 1 || s.Interrupted {
		t.Fatalf("run 2 exit %d summary %+v\n%s", code, s, stderr)
	}
	if s.AlreadyIndexed < ackedRun1 || s.AlreadyIndexed+s.Indexed != 40 {
		t.Fatalf("run 2 skipped %d (run 1 acknowledged %d) and indexed %d; want 40 in all", s.AlreadyIndexed, ackedRun1, s.Indexed)
	}

	// Every photo indexed exactly once (refreshed here: run 1's documents
	// were stored with refresh=false, and _count is a search).
	if resp, err := http.Post(testutil.ESURL()+"/"+g.alias+"/_refresh", "application/json", nil); err == nil {
		resp.Body.Close()
	}
	var count struct{ Count int }
	if st := getJSON(t, testutil.ESURL()+"/"+g.alias+"/_count", &count); st != 200 || count.Count != 40 {
		t.Fatalf("index holds %d documents (status %d), want 40", count.Count, st)
	}
	for rel, id := range ids {
		if st := getJSON(t, g.url+"/v1/images/"+id, nil); st != 200 {
			t.Fatalf("%s not indexed (%d)", rel, st)
		}
	}
	// No file uploaded again after it was acknowledged.
	proxy.mu.Lock()
	defer proxy.mu.Unlock()
	twice := 0
	for id, seqs := range proxy.uploads {
		ack, ok := proxy.acks[id]
		for _, s := range seqs {
			if ok && s > ack {
				t.Errorf("%s uploaded again (seq %d) after its acknowledgement (seq %d)", id, s, ack)
			}
		}
		if len(seqs) > 1 {
			twice++
		}
	}
	// Each photo was acknowledged, or found by the existence check (run 1's
	// killed request may have been stored without its answer reaching the client).
	for rel, id := range ids {
		if _, acked := proxy.acks[id]; !acked && !proxy.found[id] {
			t.Errorf("%s neither acknowledged nor found indexed", rel)
		}
	}
	t.Logf("run 1 acknowledged %d files in 3 requests before the kill; run 2 skipped %d, uploaded %d in %d requests; %d files sent twice (never acknowledged the first time)",
		ackedRun1, s.AlreadyIndexed, s.UploadedFiles, s.Requests, twice)
}

// lockedBuffer is written by the process's output copier and read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Ctrl-C: the requests in flight finish and are recorded, the summary says
// interrupted, the exit status is 130, and a rerun does the rest.
func TestIngestInterruptedE2E(t *testing.T) {
	g := startBinary(t)
	root, _ := photoFolder(t, 24, 900)
	proxy := newCountingProxy(g.url, 2)
	srv := httptest.NewServer(proxy)
	defer srv.Close()
	report := filepath.Join(t.TempDir(), "report.jsonl")
	cmd := exec.Command(binPath(g), "ingest", root, "--url", srv.URL, "--batch", "4", "--workers", "1", "--report", report, "-o", "json")
	var stdout bytes.Buffer
	var stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-proxy.blocked:
	case <-time.After(5 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("no third request; stderr:\n%s", stderr.String())
	}
	cmd.Process.Signal(os.Interrupt)
	// The process now waits for its request in flight: let it through.
	for deadline := time.Now().Add(time.Minute); !strings.Contains(stderr.String(), "interrupted"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no sign of the interrupt; stderr:\n%s", stderr.String())
		}
	}
	close(proxy.release)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("exit %v, want status 130; stderr:\n%s", err, stderr.String())
	}
	var s ingest.Summary
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatalf("summary: %v\n%s", err, stdout.String())
	}
	proxy.mu.Lock()
	acked := len(proxy.acks)
	proxy.mu.Unlock()
	if !s.Interrupted || s.Requests != 3 || s.Indexed != acked || s.Indexed == 0 || s.Indexed >= 24 {
		t.Fatalf("summary %+v; the proxy acknowledged %d files in 3 requests", s, acked)
	}
	code, s2, _ := ingestBin(t, binPath(g), root, "--url", srv.URL, "--report", report)
	if code != 1 || s2.AlreadyIndexed != s.Indexed || s2.Indexed != 24-s.Indexed || s2.Failed != 1 {
		t.Fatalf("rerun exit %d summary %+v after %+v", code, s2, s)
	}
}
