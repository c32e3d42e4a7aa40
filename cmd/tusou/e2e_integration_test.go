//go:build integration

package main

import (
	"bytes"
	"compress/zlib"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tusou/tusou/internal/testutil"
)

// gateway is the real tusou binary running against the local stack.
type gateway struct {
	cmd   *exec.Cmd
	url   string
	alias string
	logs  *bytes.Buffer
}

// startBinary starts the binary with the test's settings plus env
// ("TUSOU_X=v" entries, which win).
func startBinary(t *testing.T, env ...string) *gateway {
	t.Helper()
	root := testutil.Root()
	// make test passes the binary it built (same flags as the release build).
	bin := os.Getenv("TUSOU_E2E_BIN")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "tusou")
		build := exec.Command("go", "build", "-o", bin, ".")
		build.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build: %v\n%s", err, out)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	sln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sidecarAddr := sln.Addr().String()
	sln.Close()
	var b [4]byte
	rand.Read(b[:])
	g := &gateway{url: "http://" + addr, alias: "tusou-e2e-" + hex.EncodeToString(b[:]), logs: &bytes.Buffer{}}
	g.cmd = exec.Command(bin, "serve")
	g.cmd.Dir = root
	g.cmd.Env = append(os.Environ(),
		"TUSOU_SERVER_LISTEN="+addr,
		"TUSOU_SIDECAR_LISTEN="+sidecarAddr,
		"TUSOU_ELASTICSEARCH_INDEX="+g.alias,
		"TUSOU_BLOBS_DIR="+t.TempDir(),
		"TUSOU_LOG_LEVEL=warn",
		"TUSOU_TEXT_TOKENIZER_PATH="+testutil.TokenizerPath(),
	)
	g.cmd.Env = append(g.cmd.Env, env...)
	g.cmd.Stdout, g.cmd.Stderr = g.logs, g.logs
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if g.cmd.ProcessState == nil {
			g.cmd.Process.Kill()
			g.cmd.Wait()
		}
		deleteAlias(g.alias)
		if t.Failed() {
			t.Logf("gateway logs:\n%s", g.logs)
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(g.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return g
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready after 90s (is `make up` running?); logs:\n%s", g.logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func deleteAlias(alias string) {
	resp, err := http.Get(testutil.ESURL() + "/_alias/" + alias)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	var indices map[string]any
	json.NewDecoder(resp.Body).Decode(&indices)
	for name := range indices {
		req, _ := http.NewRequest("DELETE", testutil.ESURL()+"/"+name, nil)
		if r, err := http.DefaultClient.Do(req); err == nil {
			r.Body.Close()
		}
	}
}

// peakRSS reads the process's high-water resident set size.
func peakRSS(pid int) (kb int) {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ = strconv.Atoi(strings.Fields(line)[1])
		}
	}
	return kb
}

func pngChunk(w *bytes.Buffer, typ string, data []byte) {
	binary.Write(w, binary.BigEndian, uint32(len(data)))
	w.WriteString(typ)
	w.Write(data)
	binary.Write(w, binary.BigEndian, crc32.ChecksumIEEE(append([]byte(typ), data...)))
}

// pngBomb is a real decompression bomb: a valid 20000x20000 grayscale PNG
// whose ~400 MB of zero pixels compress to well under 1 MB.
func pngBomb(t *testing.T) []byte {
	const w, h = 20000, 20000
	var idat bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&idat, zlib.BestCompression)
	row := make([]byte, w+1)
	for y := 0; y < h; y++ {
		zw.Write(row)
	}
	zw.Close()
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 0 // 8-bit grayscale
	pngChunk(&b, "IHDR", ihdr)
	pngChunk(&b, "IDAT", idat.Bytes())
	pngChunk(&b, "IEND", nil)
	t.Logf("PNG bomb: %d bytes on the wire, %d MB decoded", b.Len(), w*h/1_000_000)
	return b.Bytes()
}

// hugeJPEG patches a real JPEG's SOF marker to claim 65000x65000.
func hugeJPEG(t *testing.T, jpg []byte) []byte {
	out := append([]byte(nil), jpg...)
	for i := 2; i+9 < len(out); {
		if out[i] != 0xFF {
			t.Fatal("no SOF marker found")
		}
		m := out[i+1]
		if m >= 0xC0 && m <= 0xC2 {
			binary.BigEndian.PutUint16(out[i+5:], 65000)
			binary.BigEndian.PutUint16(out[i+7:], 65000)
			return out
		}
		i += 2 + int(binary.BigEndian.Uint16(out[i+2:]))
	}
	t.Fatal("no SOF marker found")
	return nil
}

// TestHostileInputs: every hostile input gets a 4xx JSON error naming the
// problem, quickly, nothing is indexed, and the gateway stays ready.
func TestHostileInputs(t *testing.T) {
	g := startBinary(t)
	root := testutil.Root()
	jpg, err := os.ReadFile(filepath.Join(root, "model_repository/testdata/images/china_original.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 100_000)
	rand.Read(random)
	// A scan that names a component the frame does not have: the header
	// reads fine, decoding fails.
	corrupt := append([]byte(nil), jpg...)
	sos := bytes.Index(corrupt, []byte{0xFF, 0xDA})
	if sos < 0 {
		t.Fatal("no SOS marker in the JPEG")
	}
	corrupt[sos+5] = 0x7F
	// A header damaged in place: the SOF sample precision set to 139.
	badHeader := append([]byte(nil), jpg...)
	sof := bytes.Index(badHeader, []byte{0xFF, 0xC0})
	if sof < 0 {
		t.Fatal("no SOF0 marker in the JPEG")
	}
	badHeader[sof+4] = 139
	baseRSS := peakRSS(g.cmd.Process.Pid)

	type tc struct {
		name, path, ctype string
		body              []byte
		status            int
		code              string
	}
	img := "/v1/images"
	cases := []tc{
		{"truncated jpeg", img, "image/jpeg", jpg[:len(jpg)/2], 422, "image_corrupt"},
		{"corrupt jpeg", img, "image/jpeg", corrupt, 422, "image_corrupt"},
		{"damaged jpeg header", img, "image/jpeg", badHeader, 422, "image_corrupt"},
		{"random bytes", img, "image/jpeg", random, 415, "image_format_unsupported"},
		{"empty body", img, "image/png", nil, 422, "image_empty"},
		{"svg", img, "image/svg+xml", []byte(`<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>`), 415, "image_format_unsupported"},
		{"html", img, "image/png", []byte("<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>"), 415, "image_format_unsupported"},
		{"png bomb 20000x20000", img, "image/png", pngBomb(t), 422, "image_too_many_pixels"},
		{"jpeg claiming 65000x65000", img, "image/jpeg", hugeJPEG(t, jpg), 422, "image_too_many_pixels"},
		{"64 MB upload", img, "image/jpeg", make([]byte, 64<<20), 413, "request_too_large"},
		{"search: k out of range", "/v1/search/text", "application/json", []byte(`{"text":"猫","k":0}`), 400, "invalid_k"},
		{"search: k too large", "/v1/search/text", "application/json", []byte(`{"text":"猫","k":100000}`), 400, "invalid_k"},
		{"search: malformed json", "/v1/search/text", "application/json", []byte(`{"text": "猫`), 400, "invalid_json"},
		{"search: missing text", "/v1/search/text", "application/json", []byte(`{"k":3}`), 400, "text_missing"},
		{"search image: corrupt", "/v1/search/image", "image/jpeg", corrupt, 422, "image_corrupt"},
	}
	// multipart without a file part
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	mw.WriteField("metadata", `{"a":1}`)
	mw.Close()
	cases = append(cases, tc{"multipart without file", img, mw.FormDataContentType(), mp.Bytes(), 400, "file_missing"})

	cases = append(cases, tc{"64 MB chunked upload", img, "image/jpeg", make([]byte, 64<<20), 413, "image_too_large"})
	for _, c := range cases {
		start := time.Now()
		var reqBody io.Reader = bytes.NewReader(c.body)
		if strings.Contains(c.name, "chunked") {
			reqBody = io.MultiReader(reqBody) // hides the length: sent chunked, limit enforced while reading
		}
		resp, err := http.Post(g.url+c.path, c.ctype, reqBody)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		var e struct {
			Error struct{ Code, Message string }
		}
		json.Unmarshal(body, &e)
		t.Logf("%-28s -> %d %-26s %6.1f ms  %q", c.name, resp.StatusCode, e.Error.Code, float64(took.Microseconds())/1000, e.Error.Message)
		if resp.StatusCode != c.status || e.Error.Code != c.code || e.Error.Message == "" {
			t.Errorf("%s: got %d %s, want %d %s", c.name, resp.StatusCode, body, c.status, c.code)
		}
		// The acceptance bound for a refusal (generous for a loaded 2-core CI box).
		if took > time.Second {
			t.Errorf("%s: refusal took %s, want < 1s", c.name, took)
		}
	}
	resp, err := http.Get(g.url + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("gateway not ready after hostile inputs: %v %v", err, resp)
	}
	resp.Body.Close()
	resp, _ = http.Get(testutil.ESURL() + "/" + g.alias + "/_count")
	var count struct{ Count int }
	json.NewDecoder(resp.Body).Decode(&count)
	resp.Body.Close()
	if count.Count != 0 {
		t.Fatalf("hostile inputs left %d documents in the index", count.Count)
	}
	t.Logf("gateway peak RSS: %d MB before hostile inputs, %d MB after", baseRSS/1024, peakRSS(g.cmd.Process.Pid)/1024)

	// Graceful shutdown: SIGTERM, exit 0.
	g.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- g.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit 30s after SIGTERM")
	}
}
