package thumbnail

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/internal/testutil"
	"github.com/tusou/tusou/preprocess"
	"github.com/tusou/tusou/service"
)

// fakeSource serves originals from memory, like service.Content.
type fakeSource map[string][]byte

type readSeekNopCloser struct{ *bytes.Reader }

func (readSeekNopCloser) Close() error { return nil }

func (f fakeSource) Content(_ context.Context, id string) (io.ReadSeekCloser, *service.Image, error) {
	data, ok := f[id]
	if !ok {
		return nil, nil, apierr.New(apierr.NotFound, "image_not_found", "no image %q", id)
	}
	sum := sha256.Sum256(data)
	return readSeekNopCloser{bytes.NewReader(data)}, &service.Image{ID: id, SHA256: hex.EncodeToString(sum[:])}, nil
}

// countingDecoder counts decodes so tests can prove the cache and 304 skip them.
type countingDecoder struct {
	*preprocess.Preprocessor
	n atomic.Int64
}

func (d *countingDecoder) Thumbnail(ctx context.Context, data []byte, maxSide int) (*image.RGBA, preprocess.Info, error) {
	d.n.Add(1)
	return d.Preprocessor.Thumbnail(ctx, data, maxSide)
}

type inline struct{}

func (inline) Do(_ context.Context, fn func() error) error { return fn() }

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.Root(), "model_repository", "testdata", "images", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newMaker(t testing.TB, src fakeSource, cacheBytes int64) (*Maker, *countingDecoder) {
	t.Helper()
	cfg := preprocess.DefaultConfig()
	cfg.MaxPixels = 20_000_000
	p, err := preprocess.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dec := &countingDecoder{Preprocessor: p}
	return New(src, dec, inline{}, cfg.MaxBytes, cacheBytes), dec
}

func decodeJPEG(t *testing.T, data []byte) image.Image {
	t.Helper()
	img, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("thumbnail is not a JPEG: %v", err)
	}
	return img
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{"": 256, "128": 128, "256": 256, "512": 512} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"0", "100", "1024", "-256", "abc", "256px", "99999999999999999999"} {
		_, err := ParseSize(bad)
		if e := apierr.As(err); e == nil || e.Kind != apierr.InvalidArgument || e.Code != "invalid_size" {
			t.Errorf("ParseSize(%q): want invalid_size, got %v", bad, err)
		}
	}
}

func TestSizesKeepAspectAndNeverUpscale(t *testing.T) {
	src := fakeSource{"hubble": fixture(t, "hubble_3000x2000.jpg"), "tiny": fixture(t, "china_64x43.jpg"),
		"alpha": fixture(t, "astronaut_rgba.png"),
		"gif":   fixture(t, "chelsea_animated.gif"), "webp": fixture(t, "flower_lossy.webp")}
	m, _ := newMaker(t, src, 0)
	cases := []struct {
		id         string
		size, w, h int
	}{
		{"hubble", 128, 128, 85}, {"hubble", 256, 256, 171}, {"hubble", 512, 512, 341},
		{"tiny", 512, 64, 43}, // never upscaled
	}
	for _, c := range cases {
		th, err := m.Get(context.Background(), c.id, c.size, "")
		if err != nil {
			t.Fatal(err)
		}
		b := decodeJPEG(t, th.Data).Bounds()
		if b.Dx() != c.w || b.Dy() != c.h {
			t.Errorf("%s@%d: %dx%d, want %dx%d", c.id, c.size, b.Dx(), b.Dy(), c.w, c.h)
		}
		if th.ContentType != "image/jpeg" {
			t.Errorf("content type %q", th.ContentType)
		}
	}
	for id, longest := range map[string]int{"alpha": 256, "gif": 225, "webp": 256} {
		th, err := m.Get(context.Background(), id, 256, "")
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if b := decodeJPEG(t, th.Data).Bounds(); max(b.Dx(), b.Dy()) != longest {
			t.Errorf("%s: %v: longest side is not %d", id, b, longest)
		}
	}
}

// chelsea_exif6.jpg stores the picture rotated, with EXIF orientation 6 to
// turn it upright: its thumbnail must equal the upright one's.
func TestOrientationApplied(t *testing.T) {
	m, _ := newMaker(t, fakeSource{"upright": fixture(t, "chelsea_exif1.jpg"), "rotated": fixture(t, "chelsea_exif6.jpg")}, 0)
	get := func(id string) *image.YCbCr {
		th, err := m.Get(context.Background(), id, 128, "")
		if err != nil {
			t.Fatal(err)
		}
		return decodeJPEG(t, th.Data).(*image.YCbCr)
	}
	a, b := get("upright"), get("rotated")
	if a.Bounds() != b.Bounds() {
		t.Fatalf("rotated %v, upright %v", b.Bounds(), a.Bounds())
	}
	var diff int
	for i := range a.Y {
		d := int(a.Y[i]) - int(b.Y[i])
		diff += max(d, -d)
	}
	if mean := float64(diff) / float64(len(a.Y)); mean > 4 {
		t.Errorf("the EXIF-rotated thumbnail differs from the upright one by %.1f luma levels on average", mean)
	}
}

func TestETagAndNotModified(t *testing.T) {
	data := fixture(t, "neardup_a.jpg")
	m, dec := newMaker(t, fakeSource{"a": data, "copy": data}, DefaultCacheBytes)
	ctx := context.Background()
	first, err := m.Get(ctx, "a", 256, "")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if want := fmt.Sprintf(`"%s-256-t%d"`, hex.EncodeToString(sum[:]), Version); first.ETag != want {
		t.Errorf("ETag %s, want %s", first.ETag, want)
	}
	other, _ := m.Get(ctx, "a", 128, "")
	if other.ETag == first.ETag {
		t.Error("two sizes share an ETag")
	}
	decodes := dec.n.Load()
	for _, inm := range []string{first.ETag, "W/" + first.ETag, `"x", ` + first.ETag, "*"} {
		th, err := m.Get(ctx, "a", 256, inm)
		if err != nil || !th.NotModified || th.Data != nil {
			t.Errorf("If-None-Match %s: NotModified=%v data=%d err=%v", inm, th.NotModified, len(th.Data), err)
		}
	}
	th, _ := m.Get(ctx, "a", 256, `"something-else"`)
	if th.NotModified || !bytes.Equal(th.Data, first.Data) {
		t.Error("a stale ETag must get the full thumbnail")
	}
	// Same bytes under another id: same ETag, served from the cache.
	cp, _ := m.Get(ctx, "copy", 256, "")
	if cp.ETag != first.ETag || !bytes.Equal(cp.Data, first.Data) {
		t.Error("identical originals must share the thumbnail")
	}
	if got := dec.n.Load(); got != decodes {
		t.Errorf("304s and cache hits decoded %d times", got-decodes)
	}
	if cp.Filename != "copy-256.jpg" {
		t.Errorf("filename %q", cp.Filename)
	}
}

func TestCacheIsBoundedInBytes(t *testing.T) {
	src := fakeSource{}
	names := []string{"chelsea_exif1.jpg", "chelsea_exif3.jpg", "coffee_420.jpg", "rocket_444.jpg", "hubble_3000x2000.jpg"}
	for _, n := range names {
		src[n] = fixture(t, n)
	}
	m, dec := newMaker(t, src, 40_000)
	for _, n := range names {
		if _, err := m.Get(context.Background(), n, 512, ""); err != nil {
			t.Fatal(err)
		}
		if used := m.cache.bytes(); used > 40_000 {
			t.Fatalf("cache holds %d bytes, bound is 40000", used)
		}
	}
	// The most recent one is cached, the first ones were evicted.
	before := dec.n.Load()
	m.Get(context.Background(), names[len(names)-1], 512, "")
	if dec.n.Load() != before {
		t.Error("the most recent thumbnail was not cached")
	}
	m.Get(context.Background(), names[0], 512, "")
	if dec.n.Load() != before+1 {
		t.Error("the oldest thumbnail was not evicted")
	}
}

func TestHostileOriginals(t *testing.T) {
	jpg := fixture(t, "coffee_420.jpg")
	src := fakeSource{
		"svg":       []byte(`<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`),
		"html":      []byte("<!doctype html><script>alert(1)</script>"),
		"truncated": jpg[:len(jpg)/3],
		"empty":     {},
		// A PNG header claiming 60000x60000 pixels: refused from the header.
		"bomb": append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\xea\x60\x00\x00\xea\x60\x08\x02\x00\x00\x00"),
			0x6c, 0x4a, 0x1c, 0x8e),
	}
	m, _ := newMaker(t, src, DefaultCacheBytes)
	want := map[string][2]string{
		"svg": {"unsupported_media_type", "image_format_unsupported"}, "html": {"unsupported_media_type", "image_format_unsupported"},
		"truncated": {"unprocessable", "image_corrupt"}, "empty": {"unprocessable", "image_empty"},
		"bomb":    {"unprocessable", "image_too_many_pixels"},
		"missing": {"not_found", "image_not_found"},
	}
	for id, w := range want {
		_, err := m.Get(context.Background(), id, 256, "")
		e := apierr.As(err)
		if e == nil || e.Kind.String() != w[0] || e.Code != w[1] {
			t.Errorf("%s: want %s/%s, got %v", id, w[0], w[1], err)
		}
	}
	if m.cache.bytes() != 0 {
		t.Error("a failure was cached")
	}
}

func TestFilenameIsSafe(t *testing.T) {
	for id, want := range map[string]string{
		"abc":           "abc-256.jpg",
		`a"b\r\n;x=..`:  "a_b_r_n_x_..-256.jpg",
		"猫":             "_-256.jpg",
		"x:y/../../etc": "x_y_.._.._etc-256.jpg",
	} {
		if got := filename(id, 256); got != want {
			t.Errorf("filename(%q) = %q, want %q", id, got, want)
		}
	}
}

// BenchmarkThumbnail measures thumbnails per second per core for a cache
// miss (read, decode, resize, encode) on fixture photos. Run with -cpu 1:
// thumbs/s is then per core.
func BenchmarkThumbnail(b *testing.B) {
	for _, c := range []struct {
		file string
		size int
	}{
		{"hubble_3000x2000.jpg", 256}, {"hubble_3000x2000.jpg", 512},
		{"china_original.jpg", 256}, {"astronaut_rgba.png", 256}, {"flower_lossy.webp", 256},
	} {
		b.Run(fmt.Sprintf("%s@%d", c.file, c.size), func(b *testing.B) {
			m, _ := newMaker(b, fakeSource{"x": fixture(b, c.file)}, 0)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				if _, err := m.Get(ctx, "x", c.size, ""); err != nil {
					b.Fatal(err)
				}
			}
			// thumbs/s is wall-clock; thumbs/cpu-s counts the CPU the process
			// used, which stays right on a shared, busy machine.
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "thumbs/s")
			b.ReportMetric(float64(b.N)/(cpuTime()-cpu0).Seconds(), "thumbs/cpu-s")
		})
	}
}

// cpuTime is the user+system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
