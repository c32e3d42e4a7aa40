// Command bench times tusou's Go preprocessing on a folder of photos (JPEG,
// also PNG/WebP/GIF if present), in
// exact mode and in fast (DCT-scaled) mode, and measures the fast mode's
// parity with the exact one. Run it on one core (GOMAXPROCS=1, taskset) next
// to bench_pillow.py; run.sh does both and prints the comparison.
//
//	go run ./preprocess/bench -dir .local/cache/bench-photos/photos -json out.json
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/tusou/tusou/preprocess"
)

type result struct {
	File    string  `json:"file"`
	Width   int     `json:"width"`
	Height  int     `json:"height"`
	MP      float64 `json:"mp"`
	Bytes   int     `json:"bytes"`
	ExactPS float64 `json:"exact_img_per_s"`
	FastPS  float64 `json:"fast_img_per_s"`
	Scale   int     `json:"fast_decode_scale"`
	// Parity of the fast tensor against the exact tensor.
	TensorMaxAbs float64 `json:"fast_tensor_max_abs_diff"`
	CropMaxAbs   int     `json:"fast_crop_max_abs_diff"`
	CropPSNR     float64 `json:"fast_crop_psnr_db"`
}

func main() {
	dir := flag.String("dir", ".local/cache/bench-photos/photos", "folder of images")
	minTime := flag.Duration("time", 2*time.Second, "minimum CPU time per image and mode")
	out := flag.String("json", "", "write results as JSON here")
	tensors := flag.String("tensors", "", "if set, write exact and fast tensors (raw float32 LE) here for embedding checks")
	flag.Parse()

	var files []string
	for _, pat := range []string{"*.jpg", "*.jpeg", "*.png", "*.webp", "*.gif"} {
		m, _ := filepath.Glob(filepath.Join(*dir, pat))
		files = append(files, m...)
	}
	sort.Strings(files)
	if len(files) == 0 {
		fmt.Fprintf(os.Stderr, "no images in %s (run preprocess/bench/fetch_photos.sh)\n", *dir)
		os.Exit(1)
	}
	exactCfg := preprocess.DefaultConfig()
	exactCfg.JPEGDCTScaling = false
	exact, err := preprocess.New(exactCfg)
	must(err)
	fast, err := preprocess.New(preprocess.DefaultConfig())
	must(err)

	fmt.Printf("Go %s, GOMAXPROCS=%d\n", runtime.Version(), runtime.GOMAXPROCS(0))
	fmt.Printf("%-44s %10s %6s %10s %10s %6s %10s %8s\n", "file", "size", "MP", "exact/s", "fast/s", "scale", "maxdiff", "PSNR")
	var results []result
	ctx := context.Background()
	for _, f := range files {
		data, err := os.ReadFile(f)
		must(err)
		te := make([]float32, exact.TensorLen())
		tf := make([]float32, fast.TensorLen())
		info, err := exact.Preprocess(ctx, data, te)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", f, err)
			continue
		}
		finfo, err := fast.Preprocess(ctx, data, tf)
		must(err)
		ce, _, err := exact.Crop(ctx, data)
		must(err)
		cf, _, err := fast.Crop(ctx, data)
		must(err)
		r := result{File: filepath.Base(f), Width: info.Width, Height: info.Height,
			MP: float64(info.Width*info.Height) / 1e6, Bytes: len(data), Scale: finfo.DecodeScale}
		r.ExactPS = rate(func() { _, _ = exact.Preprocess(ctx, data, te) }, *minTime)
		r.FastPS = rate(func() { _, _ = fast.Preprocess(ctx, data, tf) }, *minTime)
		var sq float64
		for i := range te {
			r.TensorMaxAbs = math.Max(r.TensorMaxAbs, math.Abs(float64(te[i]-tf[i])))
		}
		for i := range ce {
			d := int(ce[i]) - int(cf[i])
			if d < 0 {
				d = -d
			}
			r.CropMaxAbs = max(r.CropMaxAbs, d)
			sq += float64(d * d)
		}
		if sq == 0 {
			r.CropPSNR = math.Inf(1)
		} else {
			r.CropPSNR = 10 * math.Log10(255*255/(sq/float64(len(ce))))
		}
		results = append(results, r)
		fmt.Printf("%-44s %10s %6.1f %10.1f %10.1f %6s %10.4f %8.1f\n", trunc(r.File, 44),
			fmt.Sprintf("%dx%d", r.Width, r.Height), r.MP, r.ExactPS, r.FastPS, fmt.Sprintf("1/%d", r.Scale), r.TensorMaxAbs, r.CropPSNR)
		if *tensors != "" {
			must(os.MkdirAll(*tensors, 0o755))
			base := strings.TrimSuffix(r.File, filepath.Ext(r.File))
			must(writeF32(filepath.Join(*tensors, base+".exact.f32"), te))
			must(writeF32(filepath.Join(*tensors, base+".fast.f32"), tf))
		}
	}
	if *out != "" {
		for i := range results {
			if math.IsInf(results[i].CropPSNR, 1) {
				results[i].CropPSNR = 999
			}
		}
		b, _ := json.MarshalIndent(map[string]any{"go": runtime.Version(), "gomaxprocs": runtime.GOMAXPROCS(0), "results": results}, "", " ")
		must(os.WriteFile(*out, b, 0o644))
	}
}

// rate runs f until it has used at least d of CPU time (and at least 3
// times) and returns calls per CPU-second of this process (user + system, all
// threads, so GC and cgo are counted). CPU time rather than wall time keeps
// the number meaningful on a shared, oversubscribed machine.
func rate(f func(), d time.Duration) float64 {
	f() // warm the buffer pool
	n := 0
	start := cpuTime()
	for n < 3 || cpuTime()-start < d {
		f()
		n++
	}
	return float64(n) / (cpuTime() - start).Seconds()
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func writeF32(path string, v []float32) error {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return os.WriteFile(path, b, 0o644)
}

func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
