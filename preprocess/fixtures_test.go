package preprocess

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixturesDir holds the project-wide reference fixtures (real photos from
// scikit-image's data set, made by model_repository/testdata/generate.py).
const fixturesDir = "../model_repository/testdata"

type projectFixtures struct {
	Images []struct {
		File         string `json:"file"`
		Format       string `json:"format"`
		Mode         string `json:"mode"`
		UprightSize  [2]int `json:"upright_size"`
		Orientation  int    `json:"exif_orientation"`
		Crop         string `json:"crop"`
		CropSHA256   string `json:"crop_rgb_sha256"`
		TensorSHA256 string `json:"pixel_values_f32le_sha256"`
	} `json:"images"`
}

func loadFixtures(t testing.TB) projectFixtures {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixturesDir, "expected/images.json"))
	if os.IsNotExist(err) {
		t.Fatal("model_repository/testdata fixtures are missing (make fixtures)")
	}
	if err != nil {
		t.Fatal(err)
	}
	var f projectFixtures
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func tensorSHA(v []float32) string {
	raw := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
	}
	s := sha256.Sum256(raw)
	return hex.EncodeToString(s[:])
}

// TestFixturesParity checks every project fixture in exact mode (crop and
// tensor bit-identical) and reports the fast mode's distance.
func TestFixturesParity(t *testing.T) {
	fx := loadFixtures(t)
	exactCfg := DefaultConfig()
	exactCfg.JPEGDCTScaling = false
	exact, err := New(exactCfg)
	if err != nil {
		t.Fatal(err)
	}
	fast, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range fx.Images {
		t.Run(im.File, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(fixturesDir, "images", im.File))
			if err != nil {
				t.Fatal(err)
			}
			crop, info, err := exact.Crop(context.Background(), data)
			if err != nil {
				t.Fatalf("Crop: %v", err)
			}
			if info.Width != im.UprightSize[0] || info.Height != im.UprightSize[1] {
				t.Errorf("upright size %dx%d, fixture %v", info.Width, info.Height, im.UprightSize)
			}
			want := loadPNGRGB(t, filepath.Join(fixturesDir, "expected", im.Crop))
			d := diffCrops(crop, want)
			tensor := make([]float32, exact.TensorLen())
			if _, err := exact.Preprocess(context.Background(), data, tensor); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(crop)
			exactWanted := !strings.EqualFold(im.Format, "JPEG") || jpegExact
			if exactWanted {
				if d.maxAbs != 0 || hex.EncodeToString(sum[:]) != im.CropSHA256 {
					t.Errorf("crop differs: max|diff| %d over %d samples", d.maxAbs, d.nDiff)
				}
				if tensorSHA(tensor) != im.TensorSHA256 {
					t.Errorf("tensor differs from the fixture (sha256)")
				}
			}
			fcrop, finfo, err := fast.Crop(context.Background(), data)
			if err != nil {
				t.Fatal(err)
			}
			fd := diffCrops(fcrop, want)
			t.Logf("%s (%s %s %dx%d): exact max|diff| %d; fast scale 1/%d max|diff| %d PSNR %.1f dB",
				im.File, im.Format, im.Mode, info.Width, info.Height, d.maxAbs, finfo.DecodeScale, fd.maxAbs, fd.psnr())
		})
	}
}
