//go:build integration

package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/color/palette"
	"image/draw"
	_ "image/jpeg" // image.DecodeConfig of thumbnails
	"image/png"
	"io"
	"math/rand"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/internal/testutil"
)

// browser is one headless Chromium tab on a gateway, recording everything
// the page writes to its console (errors, exceptions, CSP violations) and
// screenshots of the main states, written out when the test fails.
type browser struct {
	t     *testing.T
	ctx   context.Context
	base  string
	mu    sync.Mutex
	logs  []string
	shots []shot
}

type shot struct {
	name string
	png  []byte
}

// newBrowser starts Chromium (Debian's package, installed by make deps) with
// a fresh profile and opens a tab.
func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	exe, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found (make deps installs Debian's chromium): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx, base: base}
	// Console subscribes (and starts the browser) before any page loads.
	messages := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			// The network source reports every 4xx the page gets; the 401
			// that asks for a key and the 422 of a corrupt upload are
			// expected and asserted on the page itself.
			if (m.Type == "error" || m.IsException()) && m.Source != "network" {
				b.mu.Lock()
				b.logs = append(b.logs, m.String())
				b.mu.Unlock()
			}
		}
	}()
	// Record CSP violations from inside the page too, before its scripts run.
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.__csp = []; document.addEventListener('securitypolicyviolation',
			(e) => window.__csp.push(e.violatedDirective + ' blocked ' + e.blockedURI));`,
	}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b.snap("at-failure")
			b.writeShots()
		} else if os.Getenv("TUSOU_TEST_ARTIFACTS") != "" {
			b.writeShots()
		}
		cancel()
		acancel()
		<-done
	})
	return b
}

// run runs actions with a deadline, failing the test with what was asked.
func (b *browser) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression into T.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// setValue sets a form field's value as a user edit would leave it.
func (b *browser) setValue(selector, v string) {
	b.t.Helper()
	eval[bool](b, fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.value = %q;
		e.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`, selector, v))
}

// waitFor polls a JavaScript predicate until it is true.
func (b *browser) waitFor(what, predicate string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool]("!!("+predicate+")",
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(40*time.Second))); err != nil {
		status, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.getElementById('status').textContent`))
		b.t.Fatalf("waiting for %s: %v (page status: %q)", what, err, status)
	}
}

func (b *browser) snap(name string) {
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err == nil {
		b.shots = append(b.shots, shot{name, png})
	}
}

func (b *browser) writeShots() {
	dir := os.Getenv("TUSOU_TEST_ARTIFACTS")
	if dir == "" {
		dir = os.TempDir()
	}
	dir, err := os.MkdirTemp(dir, "tusou-ui-*")
	if err != nil {
		b.t.Logf("screenshots not written: %v", err)
		return
	}
	for i, s := range b.shots {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("%02d-%s.png", i, s.name)), s.png, 0o644)
	}
	b.t.Logf("screenshots of the page's states: %s", dir)
}

// problems returns console errors, exceptions and CSP violations so far.
func (b *browser) problems() []string {
	b.t.Helper()
	csp := eval[[]string](b, `window.__csp || []`)
	b.mu.Lock()
	defer b.mu.Unlock()
	return append(append([]string(nil), b.logs...), csp...)
}

// markStale tags the current results so a wait can tell the next grid apart.
func (b *browser) markStale() {
	b.t.Helper()
	eval[bool](b, `(document.querySelectorAll('[data-testid=result]').forEach((li) => li.dataset.stale = '1'), true)`)
}

// freshGridLoaded is true once a new grid shows and every thumbnail in it
// has decoded (naturalWidth > 0).
const freshGridLoaded = `(() => {
	const r = [...document.querySelectorAll('[data-testid=results] [data-testid=result]')];
	return r.length > 0 && r.every((li) => !li.dataset.stale && li.querySelector('img').complete && li.querySelector('img').naturalWidth > 0);
})()`

func (b *browser) waitGrid(what string) {
	b.t.Helper()
	b.waitFor(what+": a new grid with loaded thumbnails", freshGridLoaded)
	b.snap(strings.ReplaceAll(what, " ", "-"))
}

func (b *browser) firstResult() string {
	b.t.Helper()
	return eval[string](b, `document.querySelector('[data-testid=result]').dataset.id`)
}

func (b *browser) resultIDs() []string {
	b.t.Helper()
	return eval[[]string](b, `[...document.querySelectorAll('[data-testid=result]')].map((li) => li.dataset.id)`)
}

// jsFile is a JavaScript expression making a File from bytes, as a real
// clipboard or drag source would hand the page.
func jsFile(name, mime string, data []byte) string {
	return fmt.Sprintf(`new File([Uint8Array.from(atob(%q), (c) => c.charCodeAt(0))], %q, {type: %q})`,
		base64.StdEncoding.EncodeToString(data), name, mime)
}

func sha(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// noisePNG is a small image no fixture resembles, so it is new to the index.
func noisePNG(t *testing.T, seed int64) []byte {
	t.Helper()
	r := rand.New(rand.NewSource(seed))
	img := image.NewRGBA(image.Rect(0, 0, 40, 30))
	for i := range img.Pix {
		img.Pix[i] = byte(r.Intn(256))
		if i%4 == 3 {
			img.Pix[i] = 255
		}
	}
	var buf bytes.Buffer
	png.Encode(&buf, img)
	return buf.Bytes()
}

// ingestFixtures adds every fixture image, one request each, with its file
// name as metadata (what the page's own uploads do), and returns name → id.
func ingestFixtures(t *testing.T, base, apiKey string) map[string]string {
	t.Helper()
	ids := map[string]string{}
	for _, f := range mustFixtures(t) {
		data := readFile(t, f.Path)
		var buf bytes.Buffer
		w := multipart.NewWriter(&buf)
		fw, _ := w.CreateFormFile("file", f.File)
		fw.Write(data)
		w.WriteField("metadata", fmt.Sprintf(`{"image_name":%q,"set":"fixtures","format":%q}`, f.File, f.Format))
		w.Close()
		req, _ := http.NewRequest("POST", base+"/v1/images", &buf)
		req.Header.Set("Content-Type", w.FormDataContentType())
		if apiKey != "" {
			req.Header.Set("Authorization", "ApiKey "+apiKey)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("ingest %s: %d %s", f.File, resp.StatusCode, body)
		}
		ids[f.File] = f.SHA256
	}
	return ids
}

// TestSearchPageInBrowser drives the page in a real headless Chromium against
// the real stack: text search (Chinese and English), search by a picked,
// pasted and dropped image, more like this, the viewer, uploads with per-file
// outcomes, state in the URL, keyboard and phone width, and no console
// errors or CSP violations along the way.
func TestSearchPageInBrowser(t *testing.T) {
	s := startGateway(t, nil)
	ids := ingestFixtures(t, s.url, "")
	imgDir := filepath.Join(testutil.Root(), "model_repository", "testdata", "images")
	checkThumbnailRoute(t, s.url, ids)
	b := newBrowser(t, s.url)

	// / redirects to the page; Chinese text, typed, then Enter.
	b.run("open the page", chromedp.Navigate(s.url+"/"), chromedp.WaitVisible(chromedp.CSS(`[data-testid=search-text]`)))
	if loc := eval[string](b, `location.pathname`); loc != "/ui/" {
		t.Fatalf("/ led to %s, want /ui/", loc)
	}
	b.run("type 一只猫", chromedp.SendKeys(chromedp.CSS(`[data-testid=search-text]`), "一只猫"+kb.Enter))
	b.waitGrid("text 一只猫")
	if n := len(b.resultIDs()); n != 24 {
		t.Errorf("%d results for the default k=24", n)
	}
	if q := eval[string](b, `new URLSearchParams(location.search).get('q')`); q != "一只猫" {
		t.Errorf("the query is not in the URL: q=%q", q)
	}

	// English, with k from the options; then the bookmarked URL restores it.
	b.markStale()
	b.run("open the options", chromedp.Click(chromedp.CSS(`#options summary`)))
	b.setValue("#k", "7")
	b.setValue("[data-testid=search-text]", "")
	b.run("type an English query", chromedp.SendKeys(chromedp.CSS(`[data-testid=search-text]`), "a photo of a rocket"+kb.Enter))
	b.waitGrid("text rocket")
	if n := len(b.resultIDs()); n != 7 {
		t.Errorf("%d results for k=7", n)
	}
	bookmark := eval[string](b, `location.href`)
	if !strings.Contains(bookmark, "k=7") || !strings.Contains(bookmark, "q=a+photo+of+a+rocket") {
		t.Errorf("bookmark %s lacks the query or k", bookmark)
	}
	b.markStale()
	b.run("go back", chromedp.NavigateBack())
	b.waitFor("back restores the Chinese query", `document.getElementById('q').value === '一只猫'`)
	b.waitGrid("back to 一只猫")
	b.markStale()
	b.run("open the bookmark", chromedp.Navigate(bookmark))
	b.waitGrid("bookmark")
	if v := eval[string](b, `document.getElementById('q').value`); v != "a photo of a rocket" {
		t.Errorf("bookmark restored %q", v)
	}
	b.setValue("#k", "24")

	// Enter that commits an IME composition must not search.
	before := eval[string](b, `location.search`)
	eval[bool](b, `(() => { const q = document.getElementById('q'); q.value = '狗';
		q.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', keyCode: 229, isComposing: true, bubbles: true, cancelable: true}));
		return true; })()`)
	time.Sleep(300 * time.Millisecond) // a search, if wrongly started, changes the URL at once
	if after := eval[string](b, `location.search`); after != before {
		t.Errorf("Enter during IME composition searched: %s -> %s", before, after)
	}

	// Pick an image file: its own copy comes first.
	b.markStale()
	b.run("pick an image", chromedp.SetUploadFiles(chromedp.CSS(`[data-testid=search-image]`), []string{filepath.Join(imgDir, "rocket_444.jpg")}))
	b.waitGrid("image pick")
	if got := b.firstResult(); got != ids["rocket_444.jpg"] {
		t.Errorf("picked rocket_444.jpg, first result %s, want its own copy %s", got, ids["rocket_444.jpg"])
	}

	// Paste an image (a ClipboardEvent carrying a File, as the OS clipboard would).
	flower := readFile(t, filepath.Join(imgDir, "flower_lossy.webp"))
	b.markStale()
	eval[bool](b, `(() => { const dt = new DataTransfer(); dt.items.add(`+jsFile("image.webp", "image/webp", flower)+`);
		document.body.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true}));
		return true; })()`)
	b.waitGrid("paste")
	if got := b.firstResult(); got != ids["flower_lossy.webp"] {
		t.Errorf("pasted flower_lossy.webp, first result %s", got)
	}

	// Drop one image on the page: search with it.
	hopper := readFile(t, filepath.Join(imgDir, "hopper_gray.jpg"))
	b.markStale()
	eval[bool](b, `(() => { const dt = new DataTransfer(); dt.items.add(`+jsFile("hopper.jpg", "image/jpeg", hopper)+`);
		for (const type of ['dragenter', 'dragover', 'drop']) {
			document.querySelector('main').dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
		}
		return true; })()`)
	b.waitGrid("drop")
	if got := b.firstResult(); got != ids["hopper_gray.jpg"] {
		t.Errorf("dropped hopper_gray.jpg, first result %s", got)
	}
	if eval[bool](b, `!document.getElementById('drop-overlay').hidden`) {
		t.Error("the drop overlay stayed up")
	}

	// More like this: from the grid of neardup_b (a resized, recompressed
	// copy of neardup_a), its near-duplicate leads. (The other way round is
	// not a fair test with the tiny random test models: an unrelated image
	// can sit closer to neardup_a than neardup_b does.)
	b.markStale()
	b.run("pick neardup_b", chromedp.SetUploadFiles(chromedp.CSS(`[data-testid=search-image]`), []string{filepath.Join(imgDir, "neardup_b.jpg")}))
	b.waitGrid("image neardup_b")
	b.markStale()
	b.run("more like this", chromedp.Click(chromedp.CSS(fmt.Sprintf(`[data-testid=result][data-id=%q] [data-testid=more-like-this]`, ids["neardup_b.jpg"]))))
	b.waitGrid("more like this")
	got := b.resultIDs()
	if got[0] != ids["neardup_a.jpg"] {
		t.Errorf("more like neardup_b: first %s, want its near-duplicate neardup_a %s", got[0], ids["neardup_a.jpg"])
	}
	for _, id := range got {
		if id == ids["neardup_b.jpg"] {
			t.Error("more like this lists the image itself")
		}
	}
	if sim := eval[string](b, `new URLSearchParams(location.search).get('similar')`); sim != ids["neardup_b.jpg"] {
		t.Errorf("similar-to is not in the URL: %q", sim)
	}

	// The viewer: click a thumbnail, see the original and its metadata; Escape closes.
	b.run("open the viewer", chromedp.Click(chromedp.CSS(`[data-testid=result] .thumb`)))
	b.waitFor("the original in the viewer", `document.getElementById('viewer').open && document.getElementById('viewer-img').naturalWidth > 0 &&
		document.getElementById('viewer-meta').textContent.includes('image_name')`)
	b.snap("viewer")
	b.run("close the viewer", chromedp.KeyEvent(kb.Escape))
	b.waitFor("the viewer closed", `!document.getElementById('viewer').open`)

	// Keyboard: "/" focuses the search box.
	eval[bool](b, `(document.activeElement.blur(), true)`)
	b.run("press /", chromedp.KeyEvent("/"))
	b.waitFor("/ focuses the search box", `document.activeElement === document.querySelector('[data-testid=search-text]')`)
	b.setValue("[data-testid=search-text]", "") // the protocol's separate char event typed the "/"

	// Uploads: three files through the multi-file input, one of them corrupt.
	dir := t.TempDir()
	newA, newB := noisePNG(t, 1), noisePNG(t, 2)
	coffee := readFile(t, filepath.Join(imgDir, "coffee_420.jpg"))
	files := map[string][]byte{"new-a.png": newA, "new-b.png": newB, "broken.jpg": coffee[:len(coffee)/3]}
	var paths []string
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	b.run("upload three files", chromedp.SetUploadFiles(chromedp.CSS(`[data-testid=ingest-files]`), paths))
	const uploadsDone = `(() => { const r = [...document.querySelectorAll('[data-testid=ingest-status]')];
		return r.length === %d && r.every((li) => ['created', 'exists', 'error', 'skipped'].includes(li.dataset.state)); })()`
	b.waitFor("three upload outcomes", fmt.Sprintf(uploadsDone, 3))
	b.run("show the uploads", chromedp.ScrollIntoView(chromedp.CSS(`#upload`)))
	b.snap("uploads")
	type row struct{ Name, State, Text, ID string }
	rows := func() map[string]row {
		var list []row
		raw := eval[string](b, `JSON.stringify([...document.querySelectorAll('[data-testid=ingest-status]')].map((li) =>
			({name: li.dataset.name, state: li.dataset.state, text: li.querySelector('.outcome').textContent, id: li.dataset.id || ''})))`)
		json.Unmarshal([]byte(raw), &list)
		out := map[string]row{}
		for _, r := range list {
			out[r.Name] = r
		}
		return out
	}
	r := rows()
	for _, name := range []string{"new-a.png", "new-b.png"} {
		if r[name].State != "created" || r[name].ID != sha(files[name]) {
			t.Errorf("%s: %+v, want created with id %s", name, r[name], sha(files[name]))
		}
	}
	if r["broken.jpg"].State != "error" || !strings.Contains(r["broken.jpg"].Text, "image_corrupt") {
		t.Errorf("broken.jpg: %+v, want its error shown", r["broken.jpg"])
	}
	// The new image is searchable at once.
	b.markStale()
	b.run("search with an uploaded image", chromedp.SetUploadFiles(chromedp.CSS(`[data-testid=search-image]`), []string{filepath.Join(dir, "new-a.png")}))
	b.waitGrid("search uploaded")
	if got := b.firstResult(); got != sha(newA) {
		t.Errorf("uploaded new-a.png is not its own first result: %s", got)
	}

	// Drop files on the upload area: a duplicate is shown as such.
	newC := noisePNG(t, 3)
	eval[bool](b, `(() => { const dt = new DataTransfer();
		dt.items.add(`+jsFile("dup.jpg", "image/jpeg", coffee)+`); dt.items.add(`+jsFile("new-c.png", "image/png", newC)+`);
		const zone = document.getElementById('upload-drop');
		for (const type of ['dragenter', 'dragover', 'drop']) zone.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
		return true; })()`)
	b.waitFor("two dropped upload outcomes", fmt.Sprintf(uploadsDone, 2))
	r = rows()
	if r["dup.jpg"].State != "exists" || !strings.Contains(r["dup.jpg"].Text, "duplicate") || r["dup.jpg"].ID != ids["coffee_420.jpg"] {
		t.Errorf("dup.jpg: %+v, want shown as a duplicate of %s", r["dup.jpg"], ids["coffee_420.jpg"])
	}
	if r["new-c.png"].State != "created" {
		t.Errorf("new-c.png: %+v", r["new-c.png"])
	}

	// Phone width: nothing wider than the screen.
	b.run("phone viewport", chromedp.EmulateViewport(390, 844))
	b.snap("phone")
	if w := eval[[]int](b, `[document.documentElement.scrollWidth, window.innerWidth]`); w[0] > w[1] {
		t.Errorf("at 390 px the page is %d px wide", w[0])
	}
	b.run("desktop viewport", chromedp.EmulateViewport(1280, 900))

	if p := b.problems(); len(p) > 0 {
		t.Errorf("console errors or CSP violations:\n%s", strings.Join(p, "\n"))
	}
	if out := os.Getenv("TUSOU_UI_SCREENSHOT"); out != "" {
		writeREADMEScreenshot(t, b, out)
	}
}

// checkThumbnailRoute covers the thumbnail route on the real stack:
// orientation, size, ETag/304, and JSON errors.
func checkThumbnailRoute(t *testing.T, base string, ids map[string]string) {
	t.Helper()
	get := func(path, inm string) (*http.Response, []byte) {
		req, _ := http.NewRequest("GET", base+path, nil)
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	// Stored rotated with EXIF orientation 6; upright it is 451x300.
	path := "/v1/images/" + ids["chelsea_exif6.jpg"] + "/thumbnail?size=128"
	resp, body := get(path, "")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/jpeg" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("thumbnail: %d %v", resp.StatusCode, resp.Header)
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(body))
	if err != nil || cfg.Width != 128 || cfg.Height != 85 {
		t.Errorf("thumbnail of chelsea_exif6.jpg: %dx%d (%v), want 128x85 upright", cfg.Width, cfg.Height, err)
	}
	etag := resp.Header.Get("ETag")
	if !strings.Contains(etag, ids["chelsea_exif6.jpg"]) {
		t.Errorf("ETag %s does not name the original's SHA-256", etag)
	}
	if resp, body := get(path, etag); resp.StatusCode != 304 || len(body) != 0 {
		t.Errorf("If-None-Match: %d, %d bytes", resp.StatusCode, len(body))
	}
	for p, want := range map[string]int{
		"/v1/images/" + ids["chelsea_exif6.jpg"] + "/thumbnail?size=999": 400,
		"/v1/images/nope/thumbnail":                                      404,
	} {
		resp, body := get(p, "")
		if resp.StatusCode != want || !strings.Contains(string(body), `"error"`) {
			t.Errorf("%s: %d %s, want %d JSON", p, resp.StatusCode, body, want)
		}
	}
}

// TestSearchPageAsksForAPIKey: with auth on, the page loads, asks for a key
// on the first 401, keeps it in sessionStorage (never in the URL) and sends
// it with every request, thumbnails included.
func TestSearchPageAsksForAPIKey(t *testing.T) {
	const key = "ui-test-key-0123456789"
	s := startGateway(t, func(c *config.Config) { c.Auth.APIKeys = []string{key} })
	ingestFixtures(t, s.url, key)
	b := newBrowser(t, s.url)
	b.run("open a bookmarked query", chromedp.Navigate(s.url+"/ui/?q="+url.QueryEscape("a cat")))
	b.waitFor("the key dialog", `document.getElementById('key-dialog').open`)
	b.snap("key dialog")
	b.run("enter the key", chromedp.SendKeys(chromedp.CSS(`#key-input`), key+kb.Enter))
	b.waitGrid("results with the key")
	if got := eval[string](b, `sessionStorage.getItem('tusou.apiKey')`); got != key {
		t.Errorf("sessionStorage holds %q", got)
	}
	if href := eval[string](b, `location.href`); strings.Contains(href, key) {
		t.Errorf("the key leaked into the URL: %s", href)
	}
	if p := b.problems(); len(p) > 0 {
		t.Errorf("console errors or CSP violations:\n%s", strings.Join(p, "\n"))
	}
}

// writeREADMEScreenshot saves the page with results as a small PNG (256
// colours, dithered) for the README: TUSOU_UI_SCREENSHOT=docs/img/ui.png.
func writeREADMEScreenshot(t *testing.T, b *browser, out string) {
	b.run("screenshot viewport", chromedp.EmulateViewport(1100, 720))
	b.run("a fresh page with a query", chromedp.Navigate(b.base+"/ui/?q="+url.QueryEscape("a cat on a sofa")+"&k=10"))
	b.waitGrid("readme")
	raw, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	src, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	pal := image.NewPaletted(src.Bounds(), screenshotPalette(src))
	draw.FloydSteinberg.Draw(pal, src.Bounds(), src, image.Point{})
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&buf, pal); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("README screenshot: %s (%d bytes)", out, buf.Len())
}

// screenshotPalette is the 40 most frequent colours of img (the page's flat
// backgrounds, text and buttons stay exact, without dithering grain) plus
// the 216 web-safe colours for the photographs.
func screenshotPalette(img image.Image) color.Palette {
	counts := map[color.RGBA]int{}
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			counts[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), 255}]++
		}
	}
	type kv struct {
		c color.RGBA
		n int
	}
	var all []kv
	for c, n := range counts {
		all = append(all, kv{c, n})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n })
	var p color.Palette
	for i := 0; i < len(all) && i < 40; i++ {
		p = append(p, all[i].c)
	}
	return append(p, palette.WebSafe...)
}
