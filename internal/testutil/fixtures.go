// Package testutil holds helpers shared by tusou's tests: the reference
// fixtures made by model_repository/testdata/generate.py, and small checks on
// the local stack.
package testutil

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Root returns the repository root: the nearest directory above the working
// directory (tests run in their package directory) whose go.mod declares
// tusou's module. It does not rely on source paths, which -trimpath removes.
func Root() string {
	dir, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if mod, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.HasPrefix(string(mod), "module github.com/tusou/tusou\n") {
			return d
		}
		if filepath.Dir(d) == d {
			panic("testutil: no go.mod of github.com/tusou/tusou above " + dir)
		}
	}
}

// FixtureImage is one reference image and its expected outputs.
type FixtureImage struct {
	File        string
	Path        string
	SHA256      string
	Format      string
	Crop        string // path of the expected 224x224 uint8 RGB crop (PNG)
	ImageEmbeds []float32
}

// Fixtures loads model_repository/testdata/expected/images.json.
func Fixtures() ([]FixtureImage, error) {
	dir := filepath.Join(Root(), "model_repository", "testdata")
	raw, err := os.ReadFile(filepath.Join(dir, "expected", "images.json"))
	if err != nil {
		return nil, fmt.Errorf("fixtures (make fixtures): %w", err)
	}
	var doc struct {
		Images []map[string]any `json:"images"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	var out []FixtureImage
	for _, m := range doc.Images {
		fi := FixtureImage{File: str(m["file"]), SHA256: str(m["sha256"]), Format: str(m["format"])}
		fi.Path = filepath.Join(dir, "images", fi.File)
		if c := str(m["crop"]); c != "" {
			fi.Crop = filepath.Join(dir, "expected", c)
		}
		vec, err := floats(m["image_embeds"])
		if err != nil {
			return nil, fmt.Errorf("%s: image_embeds: %w", fi.File, err)
		}
		fi.ImageEmbeds = vec
		out = append(out, fi)
	}
	return out, nil
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

// floats accepts a JSON array of numbers, or a string holding one.
func floats(v any) ([]float32, error) {
	if s, ok := v.(string); ok {
		var arr []float64
		if err := json.Unmarshal([]byte(s), &arr); err != nil {
			return nil, err
		}
		v = toAny(arr)
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("want a list, got %T", v)
	}
	out := make([]float32, len(arr))
	for i, x := range arr {
		switch n := x.(type) {
		case float64:
			out[i] = float32(n)
		case string:
			f, err := strconv.ParseFloat(n, 64)
			if err != nil {
				return nil, err
			}
			out[i] = float32(f)
		default:
			return nil, fmt.Errorf("item %d is %T", i, x)
		}
	}
	return out, nil
}

func toAny(a []float64) []any {
	out := make([]any, len(a))
	for i, x := range a {
		out[i] = x
	}
	return out
}

// Cosine is the cosine similarity of a and b.
func Cosine(a, b []float32) float64 {
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	return dot / math.Sqrt(na*nb)
}

// ESURL is the Elasticsearch node integration tests use: TUSOU_ES_URL, by
// default the local stack's http://127.0.0.1:9200.
func ESURL() string {
	if u := os.Getenv("TUSOU_ES_URL"); u != "" {
		return strings.TrimRight(u, "/")
	}
	return "http://127.0.0.1:9200"
}

// TokenizerPath is the absolute path of the tokenizer matching the clip_text
// model the local stack serves: the exported real one when present (then
// `make up` serves the real models), else the tiny test one.
func TokenizerPath() string {
	real := filepath.Join(Root(), "model_repository", "clip_text", "tokenizer.json")
	if _, err := os.Stat(real); err == nil {
		return real
	}
	return filepath.Join(Root(), "model_repository", "tiny", "clip_text", "tokenizer.json")
}
