package ingest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tusou/tusou/client"
	"github.com/tusou/tusou/client/clienttest"
)

// fakeJPEG is a distinct "image": JPEG magic, then n bytes derived from seed.
// The fake gateway does not decode, so only the magic matters.
func fakeJPEG(seed string, n int) []byte {
	b := []byte("\xff\xd8\xff\xe0" + seed)
	for len(b) < n {
		b = append(b, byte(len(b)*7), seed[0])
	}
	return b
}

func write(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fixture builds a photo folder with every kind of file the walk meets.
// It returns the folder and the relative paths of the indexable images.
func fixture(t *testing.T, images int) (string, []string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "photos")
	var rels []string
	for i := range images {
		rel := fmt.Sprintf("%d/%02d/img%03d.jpg", 2020+i%3, i%5, i)
		if i%4 == 0 {
			rel = fmt.Sprintf("top%03d.JPEG", i) // names do not matter, content does
		}
		write(t, filepath.Join(root, rel), fakeJPEG(fmt.Sprintf("image-%d", i), 2000+i))
		rels = append(rels, rel)
	}
	write(t, filepath.Join(root, "2020/corrupt.jpg"), fakeJPEG("CORRUPT", 100))
	write(t, filepath.Join(root, "notes.txt"), []byte("shopping list"))
	write(t, filepath.Join(root, "no-extension-but-png"), []byte("\x89PNG\r\n\x1a\nrest of a png"))
	rels = append(rels, "no-extension-but-png")
	write(t, filepath.Join(root, "scan.bmp"), append([]byte("BM"), make([]byte, 60)...))
	write(t, filepath.Join(root, "copies/dup.jpg"), fakeJPEG("image-1", 2001))
	must(t, os.Symlink("..", filepath.Join(root, "copies/up")))          // loops back to photos/
	must(t, os.Symlink("nowhere", filepath.Join(root, "copies/broken"))) // dangling
	must(t, os.Symlink("self", filepath.Join(root, "copies/self")))      // ELOOP
	return root, rels
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func rejectCorrupt(name string, data []byte) *clienttest.ItemError {
	if bytes.Contains(data, []byte("CORRUPT")) {
		return &clienttest.ItemError{Status: 422, Code: "image_corrupt", Message: name + ": damaged JPEG data"}
	}
	return nil
}

func newGateway(t *testing.T) (*clienttest.Gateway, *client.Client) {
	t.Helper()
	g := clienttest.New()
	t.Cleanup(g.Close)
	g.Reject = rejectCorrupt
	c, err := client.New(g.URL, client.WithRetry(client.Retry{MaxAttempts: 3, Initial: time.Millisecond, Max: time.Millisecond, MaxRetryAfter: time.Millisecond}))
	must(t, err)
	return g, c
}

func readReport(t *testing.T, b []byte) []ReportLine {
	t.Helper()
	var lines []ReportLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var l ReportLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("report line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	return lines
}

func byStatus(lines []ReportLine) map[string][]ReportLine {
	m := map[string][]ReportLine{}
	for _, l := range lines {
		m[l.Status] = append(m[l.Status], l)
	}
	return m
}

func TestIngestFolder(t *testing.T) {
	root, rels := fixture(t, 23)
	g, c := newGateway(t)
	var mu sync.Mutex
	var perRequest []int
	g.OnIngest = func(_ *http.Request, ups []clienttest.Upload) {
		mu.Lock()
		defer mu.Unlock()
		perRequest = append(perRequest, len(ups))
	}
	var report bytes.Buffer
	s, err := Run(context.Background(), Options{Paths: []string{root}, Gateway: c, Report: &report,
		BatchFiles: 5, Workers: 3, Metadata: map[string]any{"album": "holiday", "image_name": "overridden"}})
	must(t, err)
	images := len(rels) // + corrupt, dup, bmp, txt
	want := Summary{Files: images + 4, Indexed: images, Duplicates: 1, Failed: 1, Unsupported: 1, NotImages: 1, Skipped: 3,
		UploadedFiles: images + 1, ReportLines: 6, Searchable: true}
	if got := predictable(s); !reflect.DeepEqual(got, want) {
		t.Fatalf("summary\n got %+v\nwant %+v", got, want)
	}
	lines := byStatus(readReport(t, report.Bytes()))
	if f := lines[StatusFailed]; len(f) != 1 || !strings.HasSuffix(f[0].Path, "corrupt.jpg") || f[0].Error.Code != "image_corrupt" {
		t.Fatalf("failed lines %+v", f)
	}
	// Files are hashed in parallel, so either copy may be seen first: the
	// line names one of the pair and points at the other.
	orig, dup := filepath.Join(root, rels[1]), filepath.Join(root, "copies", "dup.jpg")
	if d := lines[StatusDuplicate]; len(d) != 1 || d[0].ID != clienttest.ID(fakeJPEG("image-1", 2001)) ||
		!(d[0].Path == dup && d[0].DuplicateOf == orig || d[0].Path == orig && d[0].DuplicateOf == dup) {
		t.Fatalf("duplicate lines %+v", d)
	}
	if u := lines[StatusUnsupported]; len(u) != 1 || u[0].Format != "bmp" {
		t.Fatalf("unsupported lines %+v", u)
	}
	var codes []string
	for _, l := range lines[StatusSkipped] {
		codes = append(codes, l.Error.Code)
	}
	slices.Sort(codes)
	if !slices.Equal(codes, []string{"broken_symlink", "symlink_loop", "symlink_loop"}) {
		t.Fatalf("skipped %v", codes)
	}

	// Every image once, with its own metadata over the run's.
	stored := g.Images()
	for _, rel := range rels {
		data, _ := os.ReadFile(filepath.Join(root, rel))
		img, ok := stored[clienttest.ID(data)]
		if !ok {
			t.Fatalf("%s not indexed", rel)
		}
		if filepath.Join(root, rel) == lines[StatusDuplicate][0].Path {
			rel = "copies/dup.jpg" // its twin was the copy indexed
		}
		if img.Metadata["relative_path"] != rel || img.Metadata["image_name"] != filepath.Base(rel) || img.Metadata["album"] != "holiday" {
			t.Fatalf("%s metadata %v", rel, img.Metadata)
		}
	}
	ups := g.Uploads()
	seen := map[string]int{}
	for _, u := range ups {
		seen[u.ID]++
		if seen[u.ID] > 1 {
			t.Fatalf("%s uploaded twice", u.Name)
		}
	}
	// Bulk loading, then one request that waits for the refresh, last.
	refreshes := g.Refreshes()
	if refreshes[len(refreshes)-1] != "wait_for" || slices.Contains(refreshes[:len(refreshes)-1], "wait_for") {
		t.Fatalf("refreshes %v: want false... then one wait_for", refreshes)
	}
	for _, n := range perRequest {
		if n > 5 {
			t.Fatalf("a request carried %d files; batch is 5", n)
		}
	}

	// Rerun: nothing uploaded, everything skipped by the existence check.
	report.Reset()
	before := len(g.Uploads())
	s2, err := Run(context.Background(), Options{Paths: []string{root}, Gateway: c, Report: &report})
	must(t, err)
	if len(g.Uploads()) != before+1 {
		// +1: corrupt.jpg is not indexed, so it is tried again.
		t.Fatalf("rerun uploaded %d files, want only the failed one", len(g.Uploads())-before)
	}
	if s2.AlreadyIndexed != images || s2.Indexed != 0 || s2.Failed != 1 || s2.Duplicates != 1 || s2.UploadedFiles != 1 {
		t.Fatalf("rerun summary %+v", s2)
	}
}

// predictable drops the fields a test cannot predict.
func predictable(s Summary) Summary {
	s.ElapsedSeconds, s.UploadedBytes, s.Requests, s.NearDuplicates, s.fileFailures = 0, 0, 0, nil, 0
	return s
}

func TestBatchesBoundedByFilesAndBytes(t *testing.T) {
	root := t.TempDir()
	for i := range 20 {
		write(t, filepath.Join(root, fmt.Sprintf("%02d.jpg", i)), fakeJPEG(fmt.Sprint(i), 1000))
	}
	write(t, filepath.Join(root, "big.jpg"), fakeJPEG("big", 5000))
	g, c := newGateway(t)
	var mu sync.Mutex
	var sizes []int
	var bytesPer []int
	g.OnIngest = func(_ *http.Request, ups []clienttest.Upload) {
		mu.Lock()
		defer mu.Unlock()
		sizes = append(sizes, len(ups))
		n := 0
		for _, u := range ups {
			n += g.Images()[u.ID].Size
		}
		bytesPer = append(bytesPer, n)
	}
	s, err := Run(context.Background(), Options{Paths: []string{root}, Gateway: c, BatchFiles: 4, BatchBytes: 3000, Workers: 2})
	must(t, err)
	if s.Indexed != 21 {
		t.Fatalf("summary %+v", s)
	}
	for i, n := range sizes {
		if n > 4 {
			t.Fatalf("request of %d files", n)
		}
		if bytesPer[i] > 3000 && n > 1 {
			t.Fatalf("request of %d bytes in %d files; a file over the bound must go alone", bytesPer[i], n)
		}
	}
	if s.Requests != len(sizes) {
		t.Fatalf("summary counts %d requests, gateway saw %d", s.Requests, len(sizes))
	}
}

func TestRetriesThrough429And503(t *testing.T) {
	root, rels := fixture(t, 6)
	g, c := newGateway(t)
	g.FailNext(1, 429, "1") // the first _exists
	g.FailNext(1, 503, "1") // the next request
	s, err := Run(context.Background(), Options{Paths: []string{root}, Gateway: c, Workers: 1})
	must(t, err)
	if s.Indexed != len(rels) || s.Failed != 1 {
		t.Fatalf("summary %+v", s)
	}
}

func TestStdinPaths(t *testing.T) {
	root, _ := fixture(t, 4)
	_, c := newGateway(t)
	list := filepath.Join(root, "2021/01/img001.jpg") + "\r\n\n" + filepath.Join(root, "notes.txt") + "\n" + filepath.Join(root, "2022") + "\n"
	var report bytes.Buffer
	s, err := Run(context.Background(), Options{Paths: []string{"-", filepath.Join(root, "missing.jpg")}, Stdin: strings.NewReader(list), Gateway: c, Report: &report})
	must(t, err)
	if s.Files != 3 || s.Indexed != 2 || s.NotImages != 1 || s.Failed != 1 {
		t.Fatalf("summary %+v", s)
	}
	if l := readReport(t, report.Bytes()); len(l) != 1 || l[0].Error.Code != "not_found" {
		t.Fatalf("report %+v", l)
	}
}

func TestGivenFileRelativePath(t *testing.T) {
	for p, want := range map[string]string{"a/b.jpg": "a/b.jpg", "./a/../c.jpg": "c.jpg", "../x/y.jpg": "y.jpg", "/abs/z.jpg": "z.jpg"} {
		if got := givenRel(p); got != want {
			t.Errorf("%q: %q, want %q", p, got, want)
		}
	}
}

func TestInterruptedRunContinues(t *testing.T) {
	root, rels := fixture(t, 40)
	g, c := newGateway(t)
	// signal.NotifyContext cancels with a cause: that is an interruption too.
	ctx, cancel := context.WithCancelCause(context.Background())
	var mu sync.Mutex
	requests := 0
	g.OnIngest = func(*http.Request, []clienttest.Upload) {
		mu.Lock()
		defer mu.Unlock()
		if requests++; requests == 3 {
			cancel(errors.New("interrupt signal received")) // Ctrl-C while the third request is in flight
		}
	}
	s, err := Run(ctx, Options{Paths: []string{root}, Gateway: c, BatchFiles: 4, Workers: 1})
	must(t, err)
	if !s.Interrupted || s.Indexed == 0 || s.Indexed >= len(rels) {
		t.Fatalf("interrupted summary %+v", s)
	}
	// The in-flight request finished and was recorded.
	if s.Indexed+s.Failed != len(g.Uploads()) {
		t.Fatalf("indexed %d + failed %d, but the gateway got %d files", s.Indexed, s.Failed, len(g.Uploads()))
	}
	g.OnIngest = nil
	s2, err := Run(context.Background(), Options{Paths: []string{root}, Gateway: c, BatchFiles: 4})
	must(t, err)
	if s2.Interrupted || s.Indexed+s2.Indexed != len(rels) || s2.AlreadyIndexed != s.Indexed {
		t.Fatalf("rerun %+v after %+v", s2, s)
	}
	count := map[string]int{}
	for _, u := range g.Uploads() {
		if count[u.ID]++; count[u.ID] > 1 && u.Result != "image_corrupt" {
			t.Fatalf("%s uploaded twice", u.Name)
		}
	}
}

func TestAbortsWhenTheKeyIsRefused(t *testing.T) {
	root, _ := fixture(t, 3)
	g, c := newGateway(t)
	g.APIKey = "secret"
	var report bytes.Buffer
	s, err := Run(context.Background(), Options{Paths: []string{root}, Gateway: c, Report: &report})
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 401 || !strings.Contains(s.Aborted, "API key") {
		t.Fatalf("err %v, summary %+v", err, s)
	}
	if len(g.Uploads()) != 0 || s.Failed != 0 {
		t.Fatalf("nothing may be uploaded or blamed on files: %+v", s)
	}
}

func TestAbortsWhenTheGatewayIsGone(t *testing.T) {
	root, _ := fixture(t, 3)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	ln.Close()
	c, err := client.New("http://"+addr, client.WithRetry(client.Retry{MaxAttempts: 2, Initial: time.Millisecond, Max: time.Millisecond}))
	must(t, err)
	s, err := Run(context.Background(), Options{Paths: []string{root}, Gateway: c})
	var te *client.TransportError
	if !errors.As(err, &te) || s.Aborted == "" || s.Failed != 0 {
		t.Fatalf("err %v summary %+v", err, s)
	}
}

func TestRequestTooLargeIsSplitPerFile(t *testing.T) {
	root := t.TempDir()
	for i := range 5 {
		write(t, filepath.Join(root, fmt.Sprintf("%d.jpg", i)), fakeJPEG(fmt.Sprint(i), 500))
	}
	write(t, filepath.Join(root, "huge.jpg"), fakeJPEG("huge", 5000))
	g, c := newGateway(t)
	g.MaxFileBytes = 1000
	var report bytes.Buffer
	s, err := Run(context.Background(), Options{Paths: []string{root}, Gateway: c, Report: &report})
	must(t, err)
	lines := readReport(t, report.Bytes())
	if s.Indexed != 5 || s.Failed != 1 || len(lines) != 1 || !strings.HasSuffix(lines[0].Path, "huge.jpg") || lines[0].Error.Code != "image_too_large" {
		t.Fatalf("summary %+v report %+v", s, lines)
	}
}

func TestNearDuplicatesReported(t *testing.T) {
	root := t.TempDir()
	a, b := fakeJPEG("a", 900), fakeJPEG("b", 900)
	write(t, filepath.Join(root, "a.jpg"), a)
	write(t, filepath.Join(root, "z/b-resized.jpg"), b)
	g, c := newGateway(t)
	older := g.Put(fakeJPEG("older", 900), nil)
	g.NearDuplicatesOf = func(id string) []clienttest.NearDuplicate {
		if id == clienttest.ID(b) {
			return []clienttest.NearDuplicate{{ID: clienttest.ID(a), Score: 0.98}, {ID: older, Score: 0.95}}
		}
		return nil
	}
	var report bytes.Buffer
	s, err := Run(context.Background(), Options{Paths: []string{root}, Gateway: c, NearDuplicates: true, Report: &report, BatchFiles: 1, Workers: 1})
	must(t, err)
	if s.Indexed != 2 || len(s.NearDuplicates) != 1 {
		t.Fatalf("summary %+v", s)
	}
	nd := s.NearDuplicates[0]
	if nd.Path != filepath.Join(root, "z/b-resized.jpg") || len(nd.NearDuplicates) != 2 ||
		nd.NearDuplicates[0].Path != filepath.Join(root, "a.jpg") || nd.NearDuplicates[1].Path != "" || nd.NearDuplicates[1].ID != older {
		t.Fatalf("near duplicates %+v", nd)
	}
	for _, u := range g.Uploads() {
		if !u.NearDuplicates || u.Refresh != "wait_for" {
			t.Fatalf("upload %+v: want near_duplicates=true and refresh=wait_for", u)
		}
	}
	var out bytes.Buffer
	s.WriteText(&out, "r.jsonl")
	if !strings.Contains(out.String(), "b-resized.jpg ~ "+filepath.Join(root, "a.jpg")+" (0.980)") {
		t.Fatalf("summary text:\n%s", out.String())
	}
	if l := readReport(t, report.Bytes()); len(l) != 1 || l[0].Status != StatusNearDuplicates {
		t.Fatalf("report %+v", l)
	}
}

func TestOlderGatewayWithoutExists(t *testing.T) {
	root, rels := fixture(t, 5)
	g, c := newGateway(t)
	g.NoExists = true
	s, err := Run(context.Background(), Options{Paths: []string{root}, Gateway: c, Workers: 1})
	must(t, err)
	if s.Indexed != len(rels) {
		t.Fatalf("summary %+v", s)
	}
	// Without the check a rerun uploads again, and the ids make it harmless.
	s, err = Run(context.Background(), Options{Paths: []string{root}, Gateway: c, Workers: 1})
	must(t, err)
	if s.Indexed != 0 || s.AlreadyIndexed != len(rels) || s.UploadedFiles != len(rels)+1 {
		t.Fatalf("rerun summary %+v", s)
	}
}

func TestProgressLine(t *testing.T) {
	got := progressLine(Snapshot{Done: 50, Total: 200, TotalFinal: true, Failed: 2, Bytes: 5_000_000}, 10*time.Second)
	want := "indexing: 50/200 files (25%), 5.0 files/s, 500.0 kB/s, ETA 30s, 2 failed"
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	if got := progressLine(Snapshot{Done: 5, Total: 9}, time.Second); !strings.Contains(got, "5/9+ files") || strings.Contains(got, "ETA") {
		t.Fatalf("walk not finished: %q", got)
	}
}
