package preprocess

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkPreprocess times the full pipeline per size class of the test
// images, in exact and fast mode. Real 1-12 MP photos are benchmarked by
// preprocess/bench (make bench).
func BenchmarkPreprocess(b *testing.B) {
	cases := []struct{ class, file string }{
		{"jpeg_0.2MP", "testdata/images/jpeg_orientation_1.jpg"},
		{"jpeg_0.8MP", "testdata/images/jpeg_420_q90.jpg"},
		{"jpeg_3.8MP_rot6", "testdata/images/jpeg_large_orientation_6.jpg"}, // 1800x1200
		{"jpeg_6MP", "testdata/images/jpeg_large_3000x2000.jpg"},
		{"png_0.08MP", "testdata/images/png_rgb.png"},
		{"png_0.08MP_rgba", "testdata/images/png_rgba.png"},
		{"webp_0.3MP", "testdata/images/webp_lossy.webp"},
		{"gif_0.1MP", "testdata/images/gif_animated.gif"},
	}
	if extra := os.Getenv("PREPROCESS_BENCH_FILE"); extra != "" {
		cases = append(cases, struct{ class, file string }{"env_" + filepath.Base(extra), extra})
	}
	for _, mode := range []struct {
		name string
		dct  bool
	}{{"exact", false}, {"fast", true}} {
		cfg := DefaultConfig()
		cfg.JPEGDCTScaling = mode.dct
		p, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range cases {
			data, err := os.ReadFile(c.file)
			if err != nil {
				b.Skipf("missing %s: %v", c.file, err)
			}
			b.Run(mode.name+"/"+c.class, func(b *testing.B) {
				dst := make([]float32, p.TensorLen())
				b.ReportAllocs()
				b.SetBytes(int64(len(data)))
				for i := 0; i < b.N; i++ {
					if _, err := p.Preprocess(context.Background(), data, dst); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
