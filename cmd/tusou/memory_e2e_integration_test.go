//go:build integration

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/tusou/tusou/internal/testutil"
)

// photo12MP makes a 4000x3000 JPEG with a photo's entropy: a real
// photograph upscaled bilinearly plus per-pixel sensor-like noise, at
// quality 96: ~7.7 MB, like a 12 MP phone photo (a smooth synthetic image
// would compress to a fraction of that and prove nothing about memory).
func photo12MP(t *testing.T) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join(testutil.Root(), "model_repository/testdata/images/hubble_3000x2000.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src, err := jpeg.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	ycc := src.(*image.YCbCr)
	const W, H = 4000, 3000
	b := ycc.Bounds()
	dst := image.NewRGBA(image.Rect(0, 0, W, H))
	rng := rand.New(rand.NewPCG(1, 2))
	for y := 0; y < H; y++ {
		sy := y * (b.Dy() - 1) / (H - 1)
		for x := 0; x < W; x++ {
			sx := x * (b.Dx() - 1) / (W - 1)
			r, g, bl, _ := ycc.At(b.Min.X+sx, b.Min.Y+sy).RGBA()
			o := dst.PixOffset(x, y)
			for k, v := range [3]uint32{r >> 8, g >> 8, bl >> 8} {
				dst.Pix[o+k] = uint8(max(0, min(255, float64(v)+rng.NormFloat64()*14)))
			}
			dst.Pix[o+3] = 255
		}
	}
	var out bytes.Buffer
	if err := jpeg.Encode(&out, dst, &jpeg.Options{Quality: 96}); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// metricValue reads one sample from the gateway's /metrics.
func metricValue(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestConcurrentLargeUploadsStayInBudget: 64 concurrent uploads of 12 MP
// photos (~490 MB of bodies at once) are each either indexed or refused
// with 429 and Retry-After, the gateway's peak resident size stays under
// 400 MB (the default server.memory_budget_bytes of 256 MiB plus the
// process itself), and after the load and a garbage collection the live
// heap is back under 64 MB: nothing holds the requests' bytes.
func TestConcurrentLargeUploadsStayInBudget(t *testing.T) {
	const n = 64
	photo := photo12MP(t)
	t.Logf("12 MP JPEG: %.1f MB", float64(len(photo))/1e6)
	bodies, types := make([][]byte, n), make([]string, n)
	for i := range bodies {
		// A distinct comment segment per upload: distinct ids, same pixels.
		com := fmt.Sprintf("upload %d", i)
		img := append([]byte{0xFF, 0xD8, 0xFF, 0xFE, 0, byte(len(com) + 2)}, com...)
		img = append(img, photo[2:]...)
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		fw, _ := mw.CreateFormFile("file", fmt.Sprintf("photo%d.jpg", i))
		fw.Write(img)
		mw.Close()
		bodies[i], types[i] = b.Bytes(), mw.FormDataContentType()
	}
	debugAddr := freeAddr(t)
	g := startBinary(t, "TUSOU_SERVER_DEBUG_LISTEN="+debugAddr)

	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := http.Post(g.url+"/v1/images", types[i], bytes.NewReader(bodies[i]))
			if err != nil {
				t.Errorf("upload %d: %v", i, err)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e struct{ Error struct{ Code string } }
			json.Unmarshal(body, &e)
			switch {
			case resp.StatusCode == http.StatusCreated:
			case resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "" && e.Error.Code != "":
			default:
				t.Errorf("upload %d: %d %.300s (want 201, or 429 with Retry-After)", i, resp.StatusCode, body)
			}
			mu.Lock()
			statuses[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	peak := peakRSS(g.cmd.Process.Pid)
	t.Logf("statuses %v; gateway peak RSS %d MB", statuses, peak/1024)
	if statuses[http.StatusCreated] == 0 {
		t.Errorf("no upload was indexed: the budget refuses everything")
	}
	if peak > 400*1024 {
		t.Errorf("peak RSS %d MB, want <= 400 MB", peak/1024)
	}

	// The debug listener's heap profile runs a collection first (gc=1).
	resp, err := http.Get("http://" + debugAddr + "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	live := metricValue(t, g.url, "go_memstats_heap_alloc_bytes")
	t.Logf("heap after the load and a GC: %.1f MB; in use in the budget: %.0f bytes", live/1e6, metricValue(t, g.url, "tusou_memory_budget_in_use_bytes"))
	if live > 64<<20 {
		t.Errorf("live heap after the load and a GC is %.1f MB, want <= 64 MB", live/1e6)
	}
	if v := metricValue(t, g.url, "tusou_memory_budget_in_use_bytes"); v != 0 {
		t.Errorf("%v bytes still reserved after every request ended", v)
	}
}

// TestTooLargeUploadReachesPythonClient: Python's urllib sends the whole
// body before it reads the response. A 64 MB upload (over the 48 MiB
// limit) must still get the 413 JSON error, not a connection reset: the
// gateway drains the body before closing.
func TestTooLargeUploadReachesPythonClient(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is not on PATH: %v", err)
	}
	g := startBinary(t)
	script := `
import json, sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1] + "/v1/images", data=bytes(64 << 20),
                             headers={"Content-Type": "image/jpeg"}, method="POST")
try:
    urllib.request.urlopen(req, timeout=60)
    print(json.dumps({"status": 200}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": json.loads(e.read())}))
`
	out, err := exec.Command(py, "-c", script, g.url).CombinedOutput()
	if err != nil {
		t.Fatalf("python urllib: %v\n%s", err, out)
	}
	var got struct {
		Status int
		Body   struct {
			Error struct{ Code, Message string }
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("python output %q: %v", out, err)
	}
	if got.Status != http.StatusRequestEntityTooLarge || got.Body.Error.Code != "request_too_large" || got.Body.Error.Message == "" {
		t.Fatalf("python urllib got %s, want 413 request_too_large", out)
	}
}
