package triton

import (
	"encoding/binary"
	"math"
	"strings"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/triton/inferencepb"
)

// putFloat32s writes src into dst as little-endian IEEE-754, the KServe raw
// tensor layout. dst must hold 4*len(src) bytes. It is safe Go (no unsafe
// reinterpretation, correct on any byte order); unrolled by four with
// fixed-size subslices so the compiler drops the per-element bounds checks,
// which measured ~2x faster than the plain loop (BenchmarkEncodeImage).
func putFloat32s(dst []byte, src []float32) {
	dst = dst[:4*len(src)]
	for len(src) >= 4 {
		d := dst[:16:16]
		binary.LittleEndian.PutUint32(d[0:4], math.Float32bits(src[0]))
		binary.LittleEndian.PutUint32(d[4:8], math.Float32bits(src[1]))
		binary.LittleEndian.PutUint32(d[8:12], math.Float32bits(src[2]))
		binary.LittleEndian.PutUint32(d[12:16], math.Float32bits(src[3]))
		dst, src = dst[16:], src[4:]
	}
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

// putFloat32sSimple is the straightforward loop, kept as the benchmark and
// test reference for putFloat32s.
func putFloat32sSimple(dst []byte, src []float32) {
	dst = dst[:4*len(src)]
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

// getFloat32s reads len(dst) little-endian float32 from src (4*len(dst)
// bytes), unrolled like putFloat32s.
func getFloat32s(dst []float32, src []byte) {
	src = src[:4*len(dst)]
	for len(dst) >= 4 {
		s := src[:16:16]
		dst[0] = math.Float32frombits(binary.LittleEndian.Uint32(s[0:4]))
		dst[1] = math.Float32frombits(binary.LittleEndian.Uint32(s[4:8]))
		dst[2] = math.Float32frombits(binary.LittleEndian.Uint32(s[8:12]))
		dst[3] = math.Float32frombits(binary.LittleEndian.Uint32(s[12:16]))
		dst, src = dst[4:], src[16:]
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// putInt64s writes src into dst as little-endian int64. dst must hold
// 8*len(src) bytes.
func putInt64s(dst []byte, src []int64) {
	dst = dst[:8*len(src)]
	for i, v := range src {
		binary.LittleEndian.PutUint64(dst[8*i:], uint64(v))
	}
}

// decodeEmbeddings extracts output from resp as n vectors of dims float32,
// checking name, datatype, shape and byte size strictly: a reply of the
// wrong size means the model is not the one configured, and silently
// truncated or misaligned vectors would poison the index. The vectors share
// one allocation; each has its capacity capped so appending to one cannot
// overwrite the next.
func decodeEmbeddings(resp *inferencepb.ModelInferResponse, model, output string, n, dims int) ([][]float32, error) {
	outs := resp.GetOutputs()
	idx := -1
	for i, o := range outs {
		if o.GetName() == output {
			idx = i
			break
		}
	}
	if idx < 0 {
		names := make([]string, len(outs))
		for i, o := range outs {
			names[i] = o.GetName()
		}
		return nil, badResponse(model, "no output %q in reply (got [%s])", output, strings.Join(names, ", "))
	}
	o := outs[idx]
	if o.GetDatatype() != outputDatatype {
		return nil, badResponse(model, "output %q is %s, want %s", output, o.GetDatatype(), outputDatatype)
	}
	if s := o.GetShape(); len(s) != 2 || s[0] != int64(n) || s[1] != int64(dims) {
		return nil, badResponse(model, "output %q has shape %s, want [%d,%d]", output, formatShape(s), n, dims)
	}
	flat := make([]float32, n*dims)
	switch raw := resp.GetRawOutputContents(); {
	case len(raw) > 0:
		if len(raw) != len(outs) {
			return nil, badResponse(model, "reply has %d raw_output_contents for %d outputs", len(raw), len(outs))
		}
		data := raw[idx]
		if len(data) != 4*n*dims {
			return nil, badResponse(model, "output %q has %d bytes, want %d ([%d,%d] FP32)", output, len(data), 4*n*dims, n, dims)
		}
		getFloat32s(flat, data)
	default:
		// Servers may answer with typed contents instead of raw bytes.
		vals := o.GetContents().GetFp32Contents()
		if len(vals) != n*dims {
			return nil, badResponse(model, "output %q has %d values, want %d ([%d,%d] FP32)", output, len(vals), n*dims, n, dims)
		}
		copy(flat, vals)
	}
	vecs := make([][]float32, n)
	for i := range vecs {
		vecs[i] = flat[i*dims : (i+1)*dims : (i+1)*dims]
	}
	return vecs, nil
}

func badResponse(model, format string, args ...any) *apierr.Error {
	e := apierr.New(apierr.BadGateway, CodeBadResponse, format, args...)
	e.Message = "Triton model " + model + ": " + e.Message
	return e
}
