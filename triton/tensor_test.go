package triton

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
)

// The unrolled encoder and decoder agree with encoding/binary for every
// length (tails of 0..3 elements included) and special values.
func TestFloat32Codec(t *testing.T) {
	special := []float32{0, float32(math.Copysign(0, -1)), 1, -1, math.MaxFloat32, math.SmallestNonzeroFloat32,
		float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN())}
	for n := range 23 {
		src := make([]float32, n)
		for i := range src {
			src[i] = special[i%len(special)] * float32(i+1)
		}
		want, err := binary.Append(nil, binary.LittleEndian, src)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 4*n)
		putFloat32s(got, src)
		if !bytes.Equal(got, want) {
			t.Fatalf("n=%d: putFloat32s differs from binary.Append", n)
		}
		back := make([]float32, n)
		getFloat32s(back, got)
		for i := range src {
			if math.Float32bits(back[i]) != math.Float32bits(src[i]) {
				t.Fatalf("n=%d i=%d: round trip %v -> %v", n, i, src[i], back[i])
			}
		}
	}
}

func TestInt64Codec(t *testing.T) {
	src := []int64{0, 1, -1, math.MaxInt64, math.MinInt64, 101, 102}
	want, err := binary.Append(nil, binary.LittleEndian, src)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8*len(src))
	putInt64s(got, src)
	if !bytes.Equal(got, want) {
		t.Fatal("putInt64s differs from binary.Append")
	}
}
