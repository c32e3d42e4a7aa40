//go:build integration

package triton

import (
	"context"
	"encoding/binary"
	"math"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/tusou/tusou/internal/testutil"
	"github.com/tusou/tusou/triton/inferencepb"
)

// The local stack serves two tiny generations under the same model names:
// version 1 (generation a) and version 2 (generation b), same shapes,
// different random weights (model_repository/tiny/README.md).
var generationVersions = []string{"1", "2"}

// probePixels is a deterministic CHW image tensor (a smooth pattern per
// channel), independent of any fixture file.
func probePixels(cfg ImageModelConfig) []float32 {
	px := make([]float32, cfg.Channels*cfg.Height*cfg.Width)
	for c := range cfg.Channels {
		for y := range cfg.Height {
			for x := range cfg.Width {
				px[(c*cfg.Height+y)*cfg.Width+x] = float32(math.Sin(float64(x*(c+1))/17) * math.Cos(float64(y)/23))
			}
		}
	}
	return px
}

// probeIDs is a short [CLS] ... [SEP] sequence inside the tiny vocabulary.
var probeIDs = []int64{101, 1234, 2345, 3456, 4567, 102}

// TestIntegrationTwoGenerations: versions 1 and 2 of clip_image and
// clip_text are served at once; an encoder pinned to a version gets that
// version's weights (same shapes, different vectors), each version is
// deterministic, and a request without a version is answered by the highest
// one (Triton's latest policy).
func TestIntegrationTwoGenerations(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// One client, one encoder per tower and generation, as a gateway holds them during a switch.
	cfg := integrationConfig()
	c, rec, _ := connect(t, cfg)
	type vectors struct{ image, text []float32 }
	got := map[string]vectors{}
	for _, v := range generationVersions {
		im, tm := cfg.Image, cfg.Text
		im.Version, tm.Version = v, v
		// Checks the server lists version v of both models with the contract's tensors.
		if err := c.CheckModelsFor(ctx, []ImageModelConfig{im}, []TextModelConfig{tm}); err != nil {
			t.Fatalf("version %s: CheckModelsFor: %v (deploy/local/triton.sh restart serves both tiny versions)", v, err)
		}
		for _, m := range []string{im.Name, tm.Name} {
			r, err := c.RPC().ModelReady(ctx, &inferencepb.ModelReadyRequest{Name: m, Version: v})
			if err != nil || !r.GetReady() {
				t.Fatalf("%s version %s not ready (%v)", m, v, err)
			}
		}
		ie, te := NewImageEncoderFor(c, im), NewTextEncoderFor(c, tm)
		t.Cleanup(func() { _ = ie.Close(context.Background()); _ = te.Close(context.Background()) })

		px := probePixels(im)
		img1, err := ie.Embed(ctx, px)
		if err != nil {
			t.Fatalf("version %s: image Embed: %v", v, err)
		}
		img2, err := ie.Embed(ctx, px)
		if err != nil {
			t.Fatalf("version %s: image Embed again: %v", v, err)
		}
		txt1, err := te.Embed(ctx, probeIDs)
		if err != nil {
			t.Fatalf("version %s: text Embed: %v", v, err)
		}
		txt2, err := te.Embed(ctx, probeIDs)
		if err != nil {
			t.Fatalf("version %s: text Embed again: %v", v, err)
		}
		if len(img1) != im.Dims || len(txt1) != tm.Dims {
			t.Fatalf("version %s: %d/%d dims, want %d/%d", v, len(img1), len(txt1), im.Dims, tm.Dims)
		}
		if c := testutil.Cosine(img1, img2); c < 0.9999 {
			t.Errorf("version %s: two image embeddings of the same probe: cosine %.6f < 0.9999", v, c)
		}
		if c := testutil.Cosine(txt1, txt2); c < 0.9999 {
			t.Errorf("version %s: two text embeddings of the same probe: cosine %.6f < 0.9999", v, c)
		}
		if n := len(rec.take(im.Name)) + len(rec.take(tm.Name)); n != 4 {
			t.Errorf("version %s: %d ModelInfer calls, want 4", v, n)
		}
		got[v] = vectors{img1, txt1}
	}

	a, b := got["1"], got["2"]
	if len(a.image) != len(b.image) || len(a.text) != len(b.text) {
		t.Fatalf("versions disagree on shapes: image %d vs %d, text %d vs %d", len(a.image), len(b.image), len(a.text), len(b.text))
	}
	ci, ct := testutil.Cosine(a.image, b.image), testutil.Cosine(a.text, b.text)
	t.Logf("cosine version 1 vs 2: image %.4f, text %.4f", ci, ct)
	if ci >= 0.99 {
		t.Errorf("image: versions 1 and 2 answer alike (cosine %.6f >= 0.99): not two generations", ci)
	}
	if ct >= 0.99 {
		t.Errorf("text: versions 1 and 2 answer alike (cosine %.6f >= 0.99): not two generations", ct)
	}

	// No version in the request: Triton's latest policy picks the highest served version.
	md, err := c.RPC().ModelMetadata(ctx, &inferencepb.ModelMetadataRequest{Name: cfg.Image.Name})
	if err != nil {
		t.Fatal(err)
	}
	highest := slices.MaxFunc(md.GetVersions(), func(x, y string) int {
		xi, _ := strconv.Atoi(x)
		yi, _ := strconv.Atoi(y)
		return xi - yi
	})
	if highest != generationVersions[len(generationVersions)-1] {
		t.Fatalf("%s versions %v: want the highest to be %s", cfg.Image.Name, md.GetVersions(), generationVersions[len(generationVersions)-1])
	}
	px := probePixels(cfg.Image)
	raw := make([]byte, 4*len(px))
	for i, f := range px {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(f))
	}
	resp, err := c.RPC().ModelInfer(ctx, &inferencepb.ModelInferRequest{
		ModelName: cfg.Image.Name,
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{
			Name: cfg.Image.InputName, Datatype: "FP32",
			Shape: []int64{1, int64(cfg.Image.Channels), int64(cfg.Image.Height), int64(cfg.Image.Width)}}},
		RawInputContents: [][]byte{raw},
	})
	if err != nil {
		t.Fatalf("ModelInfer without a version: %v", err)
	}
	if resp.GetModelVersion() != highest {
		t.Errorf("ModelInfer without a version answered by version %q, want %q", resp.GetModelVersion(), highest)
	}
	if len(resp.GetRawOutputContents()) != 1 || len(resp.GetRawOutputContents()[0]) != 4*cfg.Image.Dims {
		t.Fatalf("ModelInfer without a version: unexpected outputs %d", len(resp.GetRawOutputContents()))
	}
	vec := make([]float32, cfg.Image.Dims)
	for i := range vec {
		vec[i] = math.Float32frombits(binary.LittleEndian.Uint32(resp.GetRawOutputContents()[0][4*i:]))
	}
	if c := testutil.Cosine(vec, got[highest].image); c < 0.9999 {
		t.Errorf("no version vs version %s: cosine %.6f < 0.9999", highest, c)
	}
}
