package triton

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"
	"unsafe"

	"github.com/tusou/tusou/triton/inferencepb"
)

// Encoding one 3x224x224 image tensor into raw_input_contents bytes.
//
// putFloat32s is the production path (safe, portable, unrolled). The others
// are for comparison only: the plain loop, binary.Encode/binary.Write
// (reflection), and an unsafe reinterpreting copy (memmove), the ceiling on a
// little-endian CPU.
func BenchmarkEncodeImage(b *testing.B) {
	cfg := DefaultConfig().Image
	px := randomImage(cfg, 1)
	dst := make([]byte, 4*len(px))
	b.Run("putFloat32s", func(b *testing.B) {
		b.SetBytes(int64(len(dst)))
		for b.Loop() {
			putFloat32s(dst, px)
		}
	})
	b.Run("plain-loop", func(b *testing.B) {
		b.SetBytes(int64(len(dst)))
		for b.Loop() {
			putFloat32sSimple(dst, px)
		}
	})
	b.Run("binary.Encode", func(b *testing.B) {
		b.SetBytes(int64(len(dst)))
		for b.Loop() {
			if _, err := binary.Encode(dst, binary.LittleEndian, px); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("binary.Write", func(b *testing.B) {
		b.SetBytes(int64(len(dst)))
		var buf bytes.Buffer
		for b.Loop() {
			buf.Reset()
			if err := binary.Write(&buf, binary.LittleEndian, px); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unsafe-copy-reference", func(b *testing.B) {
		b.SetBytes(int64(len(dst)))
		for b.Loop() {
			copy(dst, unsafe.Slice((*byte)(unsafe.Pointer(&px[0])), 4*len(px)))
		}
	})
}

// Decoding a [64,512] FP32 reply into vectors.
func BenchmarkDecodeEmbeddings(b *testing.B) {
	const n, dims = 64, 512
	vecs := make([][]float32, n)
	for i := range vecs {
		vecs[i] = make([]float32, dims)
		for k := range vecs[i] {
			vecs[i][k] = float32(i*k) / 7
		}
	}
	resp := embedResponse("clip_image", "image_embeds", vecs, dims)
	b.SetBytes(4 * n * dims)
	for b.Loop() {
		if _, err := decodeEmbeddings(resp, "clip_image", "image_embeds", n, dims); err != nil {
			b.Fatal(err)
		}
	}
}

// The whole image path for a batch of 32 through the in-memory fake server:
// encoding, protobuf marshalling, gRPC over bufconn, fake model, decoding.
// The fake's own work (decoding the tensor again) is included.
func BenchmarkImageEmbedBatch32Bufconn(b *testing.B) {
	cfg := testConfig()
	f := newFakeTriton(cfg)
	f.inferHook = func(_ context.Context, req *inferencepb.ModelInferRequest) (*inferencepb.ModelInferResponse, error) {
		n := int(req.GetInputs()[0].GetShape()[0])
		vecs := make([][]float32, n)
		for i := range vecs {
			vecs[i] = make([]float32, cfg.Image.Dims)
		}
		return embedResponse(req.GetModelName(), cfg.Image.OutputName, vecs, cfg.Image.Dims), nil
	}
	c, _ := startFake(b, f, cfg)
	enc := NewImageEncoder(c)
	defer enc.Close(context.Background())
	imgs := make([][]float32, 32)
	for i := range imgs {
		imgs[i] = randomImage(cfg.Image, i)
	}
	b.SetBytes(int64(32 * 4 * len(imgs[0])))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := enc.EmbedBatch(context.Background(), imgs); err != nil {
			b.Fatal(err)
		}
	}
}
