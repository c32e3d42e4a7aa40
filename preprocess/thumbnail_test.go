package preprocess

import (
	"context"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"testing"

	"github.com/tusou/tusou/apierr"
)

// meanAbsDiff is the mean absolute difference per RGB sample of two
// same-sized images.
func meanAbsDiff(a, b *image.RGBA) float64 {
	var sum, n float64
	for i := range a.Pix {
		if i%4 == 3 {
			continue
		}
		d := int(a.Pix[i]) - int(b.Pix[i])
		if d < 0 {
			d = -d
		}
		sum += float64(d)
		n++
	}
	return sum / n
}

func TestThumbnailSizesAndAspect(t *testing.T) {
	p := mustNew(t, DefaultConfig())
	cases := []struct {
		file       string
		size       int
		wantW, wan int
	}{
		{"jpeg_large_3000x2000.jpg", 256, 256, 171},     // DCT-scaled 1/4, landscape
		{"jpeg_large_3000x2000.jpg", 512, 512, 341},     // 1/2
		{"jpeg_large_orientation_6.jpg", 256, 171, 256}, // 1800x1200 stored, displayed portrait
		{"jpeg_odd_333x517.jpg", 128, 82, 128},
		{"jpeg_tiny_upscale_37x23.jpg", 256, 37, 23}, // never upscaled
		{"png_rgba.png", 64, 0, 0},                   // checked against the header below
		{"gif_animated.gif", 16, 0, 0},
		{"webp_lossy.webp", 32, 0, 0},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s@%d", c.file, c.size), func(t *testing.T) {
			data := readTestImage(t, c.file)
			img, info, err := p.Thumbnail(context.Background(), data, c.size)
			if err != nil {
				t.Fatal(err)
			}
			w, h := img.Bounds().Dx(), img.Bounds().Dy()
			if c.wantW == 0 {
				c.wantW, c.wan = fitWithin(info.Width, info.Height, c.size)
				if max(w, h) != min(c.size, max(info.Width, info.Height)) {
					t.Errorf("longest side %d, want %d", max(w, h), c.size)
				}
			}
			if w != c.wantW || h != c.wan {
				t.Errorf("thumbnail %dx%d, want %dx%d (source %v)", w, h, c.wantW, c.wan, info)
			}
			for i := 3; i < len(img.Pix); i += 4 {
				if img.Pix[i] != 255 {
					t.Fatalf("pixel %d is not opaque: transparency must be composited", i/4)
				}
			}
		})
	}
}

// Every EXIF orientation of the same picture (the project fixtures store
// chelsea with the inverse of orientation 1, 3, 5, 6 and 8 applied) makes the
// same upright thumbnail; a wrong rotation or mirror differs by tens of levels.
func TestThumbnailHonoursOrientation(t *testing.T) {
	p := mustNew(t, DefaultConfig())
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("..", "model_repository", "testdata", "images", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ref, _, err := p.Thumbnail(context.Background(), read("chelsea_exif1.jpg"), 128)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []int{3, 5, 6, 8} {
		img, info, err := p.Thumbnail(context.Background(), read(fmt.Sprintf("chelsea_exif%d.jpg", o)), 128)
		if err != nil {
			t.Fatal(err)
		}
		if info.Orientation != o {
			t.Errorf("orientation %d read as %d", o, info.Orientation)
		}
		if img.Bounds() != ref.Bounds() {
			t.Fatalf("orientation %d: %v, want %v", o, img.Bounds(), ref.Bounds())
		}
		if d := meanAbsDiff(img, ref); d > 4 {
			t.Errorf("orientation %d: differs from the upright image by %.1f levels on average", o, d)
		}
	}
	mirrored, _, _ := p.Thumbnail(context.Background(), read("chelsea_exif1.jpg"), 128)
	// The mirror image must not pass as upright (the check above can fail).
	w := mirrored.Bounds().Dx()
	for y := 0; y < mirrored.Bounds().Dy(); y++ {
		for x := 0; x < w/2; x++ {
			a, b := mirrored.PixOffset(x, y), mirrored.PixOffset(w-1-x, y)
			for k := 0; k < 4; k++ {
				mirrored.Pix[a+k], mirrored.Pix[b+k] = mirrored.Pix[b+k], mirrored.Pix[a+k]
			}
		}
	}
	if d := meanAbsDiff(mirrored, ref); d < 10 {
		t.Errorf("a mirrored thumbnail differs by only %.1f levels: the orientation check proves nothing", d)
	}
}

// The DCT-scaled path and the full decode agree closely (the fast path is
// not a different picture).
func TestThumbnailDCTScalingMatchesFullDecode(t *testing.T) {
	p := mustNew(t, DefaultConfig())
	data := readTestImage(t, "jpeg_large_orientation_6.jpg")
	fast, info, err := p.Thumbnail(context.Background(), data, 256)
	if err != nil {
		t.Fatal(err)
	}
	if jpegExact && info.DecodeScale == 1 {
		t.Errorf("a 3000x2000 JPEG for a 256 px thumbnail was decoded at full size")
	}
	// Full decode: the same resampler from the exact decode (denom 1).
	bufs := new(buffers)
	hdr, _ := p.check(data)
	img, err := decodeAny(data, hdr, 1, p.bg, bufs)
	if err != nil {
		t.Fatal(err)
	}
	v := orientedView(img, hdr.orientation)
	full := image.NewRGBA(fast.Bounds())
	resizeFit(v, [4]float32{0, 0, float32(v.w), float32(v.h)}, full.Bounds().Dx(), full.Bounds().Dy(), full, bufs)
	if d := meanAbsDiff(fast, full); d > 2 {
		t.Errorf("DCT-scaled thumbnail differs from the full decode by %.2f levels on average", d)
	}
}

func TestThumbnailRefusesLikeIngest(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxPixels = 1_000_000
	p := mustNew(t, cfg)
	ctx := context.Background()
	_, _, err := p.Thumbnail(ctx, pngBomb(100000, 100000), 256)
	wantErr(t, err, apierr.Unprocessable, "image_too_many_pixels")
	_, _, err = p.Thumbnail(ctx, []byte("<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"), 256)
	wantErr(t, err, apierr.UnsupportedMediaType, "image_format_unsupported")
	_, _, err = p.Thumbnail(ctx, nil, 256)
	wantErr(t, err, apierr.Unprocessable, "image_empty")
	data := readTestImage(t, "jpeg_420_q90.jpg")
	_, _, err = p.Thumbnail(ctx, data[:len(data)/2], 256)
	wantErr(t, err, apierr.Unprocessable, "image_corrupt")
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	_, _, err = p.Thumbnail(canceled, data, 256)
	wantErr(t, err, apierr.Canceled, "request_canceled")
}
