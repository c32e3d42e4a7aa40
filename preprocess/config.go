package preprocess

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// Format names as they appear in Config.Formats, Info.Format and error messages.
const (
	FormatJPEG = "jpeg"
	FormatPNG  = "png"
	FormatGIF  = "gif"
	FormatWebP = "webp"
)

// supportedFormats are the formats this package can decode. Config.Formats may
// narrow them, never widen them.
var supportedFormats = []string{FormatJPEG, FormatPNG, FormatGIF, FormatWebP}

// Config is the preprocess section of the tusou config.
type Config struct {
	// MaxBytes is the largest encoded image accepted.
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxPixels is the largest width×height accepted, read from the header
	// before any pixel is decoded. It bounds decode memory: about 3 bytes per
	// pixel for JPEG output (plus libjpeg's coefficient buffer for progressive
	// files) and up to 8 bytes per pixel for 16-bit PNG.
	MaxPixels int64 `yaml:"max_pixels"`
	// Formats lists the accepted formats (jpeg, png, gif, webp), sniffed from
	// magic bytes; Content-Type is never trusted.
	Formats []string `yaml:"formats"`
	// Size is the model's square input side (CLIP ViT-B/32: 224).
	Size int `yaml:"size"`
	// Mean and Std are the per-channel (R, G, B) normalisation constants,
	// applied to pixel/255.
	Mean [3]float64 `yaml:"mean"`
	Std  [3]float64 `yaml:"std"`
	// JPEGDCTScaling lets libjpeg-turbo decode large JPEGs at 1/2, 1/4 or 1/8
	// scale (like Pillow's draft mode) before the exact bicubic resize. It is
	// several times faster on photos and changes the tensor only slightly
	// (preprocess/README.md has the measured parity); false gives bit-exact
	// parity with the Pillow reference.
	JPEGDCTScaling bool `yaml:"jpeg_dct_scaling"`
	// DCTMinSideRatio is how much larger than Size the DCT-scaled image's
	// shortest side must stay, so the antialiasing resize still has real
	// pixels to average over. 2.0 keeps at least 448 px for a 224 model.
	DCTMinSideRatio float64 `yaml:"dct_min_side_ratio"`
	// Background is the colour transparent pixels are composited over, as
	// "white" (the CLIP reference: transformers' convert_to_rgb), "black", or
	// "#rrggbb".
	Background string `yaml:"background"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		// 32 MiB holds any camera JPEG (a 50 MP JPEG at quality 95 is ~25 MB)
		// and stays below the gateway's 48 MiB body limit.
		MaxBytes: 32 << 20,
		// 50 MP covers current phone and most DSLR sensors; a decoded 50 MP
		// RGB image is 150 MB, which bounds per-request decode memory.
		MaxPixels: 50_000_000,
		Formats:   append([]string(nil), supportedFormats...),
		Size:      224,
		// OpenAI CLIP constants (transformers OPENAI_CLIP_MEAN / OPENAI_CLIP_STD).
		Mean:            [3]float64{0.48145466, 0.4578275, 0.40821073},
		Std:             [3]float64{0.26862954, 0.26130258, 0.27577711},
		JPEGDCTScaling:  true,
		DCTMinSideRatio: 2.0,
		Background:      "white",
	}
}

// Validate reports every invalid field at once, each named by its yaml key.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBytes <= 0 {
		errs = append(errs, fmt.Errorf("max_bytes: must be > 0, got %d", c.MaxBytes))
	}
	if c.MaxPixels <= 0 {
		errs = append(errs, fmt.Errorf("max_pixels: must be > 0, got %d", c.MaxPixels))
	}
	if len(c.Formats) == 0 {
		errs = append(errs, fmt.Errorf("formats: must list at least one of %s", strings.Join(supportedFormats, ", ")))
	}
	for _, f := range c.Formats {
		if !isSupported(f) {
			errs = append(errs, fmt.Errorf("formats: unknown format %q, expected one of %s", f, strings.Join(supportedFormats, ", ")))
		}
	}
	if c.Size < 1 || c.Size > 4096 {
		errs = append(errs, fmt.Errorf("size: must be in [1, 4096], got %d", c.Size))
	}
	for i, s := range c.Std {
		if !(s > 0) || math.IsInf(s, 0) {
			errs = append(errs, fmt.Errorf("std: channel %d must be > 0, got %v", i, s))
		}
	}
	for i, m := range c.Mean {
		if math.IsNaN(m) || math.IsInf(m, 0) {
			errs = append(errs, fmt.Errorf("mean: channel %d must be finite, got %v", i, m))
		}
	}
	if c.JPEGDCTScaling && !(c.DCTMinSideRatio >= 1) {
		errs = append(errs, fmt.Errorf("dct_min_side_ratio: must be >= 1 when jpeg_dct_scaling is on, got %v", c.DCTMinSideRatio))
	}
	if _, err := parseBackground(c.Background); err != nil {
		errs = append(errs, fmt.Errorf("background: %w", err))
	}
	return errors.Join(errs...)
}

func isSupported(f string) bool {
	for _, s := range supportedFormats {
		if f == s {
			return true
		}
	}
	return false
}

// parseBackground turns the background setting into an RGB triple.
func parseBackground(s string) ([3]uint8, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "white", "":
		return [3]uint8{255, 255, 255}, nil
	case "black":
		return [3]uint8{0, 0, 0}, nil
	}
	var r, g, b uint8
	if len(s) == 7 && s[0] == '#' {
		if _, err := fmt.Sscanf(s[1:], "%02x%02x%02x", &r, &g, &b); err == nil {
			return [3]uint8{r, g, b}, nil
		}
	}
	return [3]uint8{}, fmt.Errorf(`must be "white", "black" or "#rrggbb", got %q`, s)
}
