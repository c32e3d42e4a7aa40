package preprocess

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/tusou/tusou/apierr"
)

func mustNew(t testing.TB, cfg Config) *Preprocessor {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func readTestImage(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata/images", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pngChunk(typ string, data []byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, uint32(len(data)))
	b.WriteString(typ)
	b.Write(data)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(append([]byte(typ), data...)))
	return b.Bytes()
}

// pngBomb is a tiny PNG whose IHDR claims w×h RGB pixels.
func pngBomb(w, h uint32) []byte {
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	b.Write(pngChunk("IHDR", ihdr))
	// A zlib stream of zeros would inflate to gigabytes; a few bytes are
	// enough to prove nothing is decoded.
	b.Write(pngChunk("IDAT", []byte{0x78, 0x9c, 0xed, 0xc1, 0x01, 0x0d, 0x00, 0x00, 0x00}))
	b.Write(pngChunk("IEND", nil))
	return b.Bytes()
}

// jpegSOF is a JPEG prefix whose frame header claims w×h with the given
// precision, followed by junk.
func jpegSOF(w, h uint16, precision byte) []byte {
	b := []byte{0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, precision}
	b = binary.BigEndian.AppendUint16(b, h)
	b = binary.BigEndian.AppendUint16(b, w)
	b = append(b, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1)
	return append(b, 0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 0x3f, 0, 0xde, 0xad)
}

func wantErr(t *testing.T, err error, kind apierr.Kind, code string, msgParts ...string) {
	t.Helper()
	e := apierr.As(err)
	if e == nil {
		t.Fatalf("want %s/%s, got %v", kind, code, err)
	}
	if e.Kind != kind || e.Code != code {
		t.Fatalf("want %s/%s, got %s/%s: %s", kind, code, e.Kind, e.Code, e.Message)
	}
	for _, m := range msgParts {
		if !strings.Contains(e.Message, m) {
			t.Errorf("message %q does not mention %q", e.Message, m)
		}
	}
}

// allocBytes runs f and returns the bytes it allocated on the Go heap.
func allocBytes(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

func TestHostileInputs(t *testing.T) {
	p := mustNew(t, DefaultConfig())
	ctx := context.Background()
	dst := make([]float32, p.TensorLen())
	jpg := readTestImage(t, "jpeg_420_q90.jpg")

	cases := []struct {
		name  string
		data  []byte
		kind  apierr.Kind
		code  string
		parts []string
	}{
		{"empty", nil, apierr.Unprocessable, "image_empty", nil},
		{"random", func() []byte {
			b := make([]byte, 4096)
			rand.New(rand.NewSource(1)).Read(b)
			b[0] = 0x42 // not a JPEG/PNG/GIF/RIFF magic
			return b
		}(), apierr.UnsupportedMediaType, "image_format_unsupported", []string{"unknown"}},
		{"svg", []byte(`<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>`),
			apierr.UnsupportedMediaType, "image_format_unsupported", []string{"svg"}},
		{"svg_bom", []byte("\xef\xbb\xbf  <svg viewBox='0 0 1 1'></svg>"), apierr.UnsupportedMediaType, "image_format_unsupported", []string{"svg"}},
		{"html", []byte("<!DOCTYPE html><html><body>hi</body></html>"), apierr.UnsupportedMediaType, "image_format_unsupported", []string{"html"}},
		{"pdf", []byte("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj"), apierr.UnsupportedMediaType, "image_format_unsupported", []string{"pdf"}},
		{"bmp", append([]byte("BM"), make([]byte, 60)...), apierr.UnsupportedMediaType, "image_format_unsupported", []string{"bmp"}},
		{"heic", append([]byte("\x00\x00\x00\x18ftypheic"), make([]byte, 20)...), apierr.UnsupportedMediaType, "image_format_unsupported", []string{"heic"}},
		{"png_bomb_20000", pngBomb(20000, 20000), apierr.Unprocessable, "image_too_many_pixels", []string{"20000×20000", "50000000"}},
		{"png_bomb_max", pngBomb(0x7fffffff, 0x7fffffff), apierr.Unprocessable, "image_too_many_pixels", nil},
		{"png_zero_width", pngBomb(0, 10), apierr.Unprocessable, "image_corrupt", nil},
		{"jpeg_sof_65000", jpegSOF(65000, 65000, 8), apierr.Unprocessable, "image_too_many_pixels", []string{"65000×65000"}},
		{"jpeg_12bit", jpegSOF(100, 100, 12), apierr.UnsupportedMediaType, "image_format_unsupported", []string{"12-bit"}},
		{"jpeg_sof_junk_body", jpegSOF(64, 64, 8), apierr.Unprocessable, "image_corrupt", nil},
		{"jpeg_soi_only", []byte{0xFF, 0xD8, 0xFF}, apierr.Unprocessable, "image_corrupt", nil},
		{"jpeg_truncated_half", jpg[:len(jpg)/2], apierr.Unprocessable, "image_corrupt", nil},
		{"jpeg_truncated_header", jpg[:40], apierr.Unprocessable, "image_corrupt", nil},
		{"gif_huge_screen", append([]byte("GIF89a\xff\xff\xff\xff\x00\x00\x00"), 0x3b), apierr.Unprocessable, "image_too_many_pixels", nil},
		{"gif_truncated", []byte("GIF89a\x10\x00\x10\x00\x80\x00\x00"), apierr.Unprocessable, "image_corrupt", nil},
		{"webp_vp8x_huge", append([]byte("RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x00\x00\x00\x00\xff\x3f\x00\xff\x3f\x00"), make([]byte, 8)...),
			apierr.Unprocessable, "image_too_many_pixels", nil},
		{"webp_truncated", []byte("RIFF\x10\x00\x00\x00WEBPVP8 "), apierr.Unprocessable, "image_corrupt", nil},
		{"png_truncated", readTestImage(t, "png_rgb.png")[:2000], apierr.Unprocessable, "image_corrupt", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var err error
			n := allocBytes(func() { _, err = p.Preprocess(ctx, c.data, dst) })
			wantErr(t, err, c.kind, c.code, c.parts...)
			if c.code == "image_too_many_pixels" && n > 1<<20 {
				t.Errorf("rejecting a pixel bomb allocated %d bytes", n)
			}
			if _, perr := p.Probe(c.data); c.code != "image_corrupt" {
				wantErr(t, perr, c.kind, c.code)
			}
		})
	}
}

func TestLimitsFromConfig(t *testing.T) {
	ctx := context.Background()
	png := readTestImage(t, "png_rgb.png")
	info, err := mustNew(t, DefaultConfig()).Probe(png)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.MaxBytes = int64(len(png) - 1)
	_, err = mustNew(t, cfg).Preprocess(ctx, png, make([]float32, 3*224*224))
	wantErr(t, err, apierr.TooLarge, "image_too_large")

	cfg = DefaultConfig()
	cfg.MaxPixels = int64(info.Width*info.Height) - 1
	_, err = mustNew(t, cfg).Probe(png)
	wantErr(t, err, apierr.Unprocessable, "image_too_many_pixels", fmt.Sprintf("%d×%d", info.Width, info.Height))

	cfg = DefaultConfig()
	cfg.Formats = []string{FormatJPEG}
	_, err = mustNew(t, cfg).Probe(png)
	wantErr(t, err, apierr.UnsupportedMediaType, "image_format_unsupported", "png", "jpeg")
}

func TestContextAndBuffer(t *testing.T) {
	p := mustNew(t, DefaultConfig())
	data := readTestImage(t, "jpeg_420_q90.jpg")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := p.Preprocess(ctx, data, make([]float32, p.TensorLen()))
	if apierr.KindOf(err) != apierr.Canceled {
		t.Fatalf("canceled context: got %v", err)
	}
	_, err = p.Preprocess(context.Background(), data, make([]float32, 10))
	if apierr.KindOf(err) != apierr.Internal {
		t.Fatalf("short dst: got %v", err)
	}
}

// TestCorruptionNeverPanics flips bytes all over valid images of every
// format: each result must be a tensor or a client error, never a panic.
func TestCorruptionNeverPanics(t *testing.T) {
	p := mustNew(t, DefaultConfig())
	dst := make([]float32, p.TensorLen())
	rng := rand.New(rand.NewSource(7))
	for _, name := range []string{"jpeg_420_q90.jpg", "jpeg_progressive.jpg", "jpeg_cmyk.jpg", "png_rgba.png",
		"png_palette_trns.png", "gif_animated.gif", "webp_lossy_alpha.webp", "webp_lossless.webp"} {
		orig := readTestImage(t, name)
		for i := 0; i < 25; i++ {
			b := append([]byte(nil), orig...)
			for j := 0; j < 1+rng.Intn(20); j++ {
				b[8+rng.Intn(len(b)-8)] = byte(rng.Intn(256))
			}
			if rng.Intn(3) == 0 {
				b = b[:8+rng.Intn(len(b)-8)]
			}
			checkOutcome(t, name, p, b, dst)
		}
	}
}

func checkOutcome(t testing.TB, name string, p *Preprocessor, data []byte, dst []float32) {
	t.Helper()
	_, err := p.Preprocess(context.Background(), data, dst)
	if err != nil {
		switch apierr.KindOf(err) {
		case apierr.Unprocessable, apierr.UnsupportedMediaType, apierr.TooLarge:
		default:
			t.Fatalf("%s: unexpected error kind: %v", name, err)
		}
		return
	}
	for _, v := range dst {
		if math.IsNaN(float64(v)) || v < -3 || v > 3 {
			t.Fatalf("%s: tensor value %v out of range", name, v)
		}
	}
}

// TestConcurrent runs different images on many goroutines and checks every
// result against the sequential one (pooled buffers must not leak between
// calls). Run with -race in CI.
func TestConcurrent(t *testing.T) {
	p := mustNew(t, DefaultConfig())
	names := []string{"jpeg_420_q90.jpg", "jpeg_orientation_6.jpg", "png_rgba.png", "webp_lossy.webp",
		"gif_transparent.gif", "jpeg_large_orientation_6.jpg", "png_upscale_100x80.png"}
	want := map[string][]byte{}
	for _, n := range names {
		c, _, err := p.Crop(context.Background(), readTestImage(t, n))
		if err != nil {
			t.Fatal(err)
		}
		want[n] = c
	}
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 6; i++ {
				n := names[(g+i)%len(names)]
				c, _, err := p.Crop(context.Background(), readTestImage(t, n))
				if err != nil || !bytes.Equal(c, want[n]) {
					errs <- n
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for n := range errs {
		t.Errorf("concurrent result for %s differs", n)
	}
}

// FuzzPreprocess feeds arbitrary bytes (seeded with every test image and the
// hostile headers) through the whole pipeline. The pixel limit is lowered so
// that each input costs bounded time and memory.
func FuzzPreprocess(f *testing.F) {
	entries, _ := os.ReadDir("testdata/images")
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Size() < 300<<10 {
			b, _ := os.ReadFile(filepath.Join("testdata/images", e.Name()))
			f.Add(b)
		}
	}
	f.Add(pngBomb(20000, 20000))
	f.Add(jpegSOF(64, 64, 8))
	f.Add([]byte("GIF89a\x01\x00\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"))
	cfg := DefaultConfig()
	cfg.MaxPixels = 4 << 20
	cfg.MaxBytes = 1 << 20
	p := mustNew(f, cfg)
	dst := make([]float32, p.TensorLen())
	f.Fuzz(func(t *testing.T, data []byte) {
		checkOutcome(t, "fuzz", p, data, dst)
		if _, err := p.Probe(data); err != nil && apierr.As(err) == nil {
			t.Fatalf("Probe returned a non-apierr error: %v", err)
		}
	})
}

// FuzzHeaders exercises the hand-written parsers directly, including inputs
// that the sniffing would route elsewhere.
func FuzzHeaders(f *testing.F) {
	f.Add([]byte("Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00\x00\x00"))
	f.Add([]byte("MM\x00*\x00\x00\x00\x08\x00\x02\x01\x12\x00\x03\x00\x00\x00\x01\x00\x03\x00\x00"))
	f.Add([]byte(`<x tiff:Orientation="6"/>`))
	f.Add(pngBomb(10, 10))
	f.Add(jpegSOF(10, 10, 8))
	f.Fuzz(func(t *testing.T, b []byte) {
		if o, _ := exifOrientation(b); validOrientation(o) < 1 || validOrientation(o) > 8 {
			t.Fatal("orientation out of range")
		}
		_ = xmpOrientation(b)
		_ = rawProfileExif(b)
		_, _ = sniff(b)
		for _, f := range supportedFormats {
			if h, err := parseHeader(b, f); err == nil && (h.orientation < 1 || h.orientation > 8) && f != FormatGIF {
				t.Fatalf("%s: orientation %d", f, h.orientation)
			}
		}
	})
}
