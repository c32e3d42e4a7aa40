package preprocess

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// referenceManifest is testdata/expected/manifest.json, written by
// testdata/gen_reference.py with the pinned Pillow + transformers.
type referenceManifest struct {
	Pillow       string `json:"pillow"`
	Transformers string `json:"transformers"`
	Images       map[string]struct {
		Width        int    `json:"width"`
		Height       int    `json:"height"`
		Mode         string `json:"mode"`
		CropSHA256   string `json:"crop_sha256"`
		TensorSHA256 string `json:"tensor_sha256"`
	} `json:"images"`
}

func loadManifest(t testing.TB) referenceManifest {
	t.Helper()
	b, err := os.ReadFile("testdata/expected/manifest.json")
	if err != nil {
		t.Fatalf("reference data missing (run testdata/gen_reference.py): %v", err)
	}
	var m referenceManifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func loadPNGRGB(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	out := make([]byte, 0, b.Dx()*b.Dy()*3)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bb, _ := img.At(x, y).RGBA()
			out = append(out, byte(r>>8), byte(g>>8), byte(bb>>8))
		}
	}
	return out
}

type cropDiff struct {
	maxAbs   int
	nDiff    int
	sumSq    float64
	nSamples int
}

func diffCrops(a, b []byte) cropDiff {
	var d cropDiff
	for i := range a {
		v := int(a[i]) - int(b[i])
		if v < 0 {
			v = -v
		}
		if v > d.maxAbs {
			d.maxAbs = v
		}
		if v != 0 {
			d.nDiff++
		}
		d.sumSq += float64(v * v)
	}
	d.nSamples = len(a)
	return d
}

func (d cropDiff) psnr() float64 {
	if d.sumSq == 0 {
		return math.Inf(1)
	}
	mse := d.sumSq / float64(d.nSamples)
	return 10 * math.Log10(255*255/mse)
}

// exactExpected says which reference images this build must match bit for
// bit in exact mode. JPEG needs the cgo libjpeg-turbo path.
func exactExpected(name string) bool {
	if strings.HasPrefix(name, "jpeg_") {
		return jpegExact
	}
	return true
}

// TestParityExact compares the uint8 crop and the float tensor with the
// Pillow/transformers reference for every test image, with DCT scaling off.
func TestParityExact(t *testing.T) {
	m := loadManifest(t)
	cfg := DefaultConfig()
	cfg.JPEGDCTScaling = false
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(m.Images))
	for n := range m.Images {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		ref := m.Images[name]
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata/images", name))
			if err != nil {
				t.Fatal(err)
			}
			crop, info, err := p.Crop(context.Background(), data)
			if err != nil {
				t.Fatalf("Crop: %v", err)
			}
			if info.Width != ref.Width || info.Height != ref.Height {
				t.Errorf("oriented size %dx%d, reference %dx%d", info.Width, info.Height, ref.Width, ref.Height)
			}
			cropSum := sha256.Sum256(crop)
			cropOK := hex.EncodeToString(cropSum[:]) == ref.CropSHA256
			diag := ""
			if dir := os.Getenv("PREPROCESS_REFERENCE_CROPS"); dir != "" {
				// PNGs written by gen_reference.py --crops DIR.
				d := diffCrops(crop, loadPNGRGB(t, filepath.Join(dir, name+".png")))
				diag = fmt.Sprintf(", max|diff| %d, %d/%d samples differ, PSNR %.1f dB", d.maxAbs, d.nDiff, d.nSamples, d.psnr())
			}
			t.Logf("%s (%s): crop identical to reference: %v%s", name, ref.Mode, cropOK, diag)
			if exactExpected(name) && !cropOK {
				t.Errorf("crop differs from the reference crop (sha256)%s", diag)
			}
			tensor := make([]float32, p.TensorLen())
			if _, err := p.Preprocess(context.Background(), data, tensor); err != nil {
				t.Fatal(err)
			}
			raw := make([]byte, 4*len(tensor))
			for i, v := range tensor {
				binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
			}
			sum := sha256.Sum256(raw)
			if exactExpected(name) && hex.EncodeToString(sum[:]) != ref.TensorSHA256 {
				// Crop equal + LUT equal implies tensor equal; this also
				// checks layout (CHW) and the LUT indexing.
				t.Errorf("float tensor differs from the reference tensor (sha256 mismatch)")
			}
		})
	}
}

// TestNormLUT checks the per-channel normalisation table against the
// processor's own output for every 8-bit value.
func TestNormLUT(t *testing.T) {
	b, err := os.ReadFile("testdata/expected/norm_lut.bin")
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	maxDiff := 0.0
	for c := 0; c < 3; c++ {
		for v := 0; v < 256; v++ {
			want := math.Float32frombits(binary.LittleEndian.Uint32(b[4*(c*256+v):]))
			got := p.lut[c][v]
			if got != want {
				maxDiff = math.Max(maxDiff, math.Abs(float64(got-want)))
				t.Errorf("lut[%d][%d] = %v, reference %v", c, v, got, want)
			}
		}
	}
	t.Logf("normalisation LUT max |diff| vs transformers: %g", maxDiff)
}

// TestParityFast measures the fast (DCT-scaled) mode against exact mode
// (which TestParityExact proves identical to the reference). It is a
// measurement, bounded loosely: DCT scaling is a different but legitimate
// downscale, so the crop must stay close, not equal.
func TestParityFast(t *testing.T) {
	m := loadManifest(t)
	p, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	exactCfg := DefaultConfig()
	exactCfg.JPEGDCTScaling = false
	exact, err := New(exactCfg)
	if err != nil {
		t.Fatal(err)
	}
	for name := range m.Images {
		if !strings.HasPrefix(name, "jpeg_") {
			continue
		}
		data, err := os.ReadFile(filepath.Join("testdata/images", name))
		if err != nil {
			t.Fatal(err)
		}
		crop, info, err := p.Crop(context.Background(), data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want, _, err := exact.Crop(context.Background(), data)
		if err != nil {
			t.Fatal(err)
		}
		d := diffCrops(crop, want)
		t.Logf("%s: scale 1/%d, crop max|diff| %d, PSNR %.1f dB", name, info.DecodeScale, d.maxAbs, d.psnr())
		if info.DecodeScale == 1 && d.maxAbs != 0 {
			t.Errorf("%s: unscaled fast path must be exact, max|diff| %d", name, d.maxAbs)
		}
		if d.psnr() < 35 {
			t.Errorf("%s: fast mode PSNR %.1f dB < 35 dB", name, d.psnr())
		}
	}
}
