package preprocess

import (
	"context"
	"image"

	"github.com/tusou/tusou/apierr"
)

// Thumbnail decodes data with the same limits and decoders as Preprocess,
// applies the EXIF orientation and resizes the whole picture (no crop) so
// that its longest side is maxSide, keeping the aspect ratio and never
// upscaling. Transparency is composited over the configured background, as
// for the model. The resampler is the same Pillow-exact antialiased bicubic.
//
// Large JPEGs are always decoded at 1/2, 1/4 or 1/8 scale when that keeps at
// least twice the output's pixels per side, whatever jpeg_dct_scaling says: a
// thumbnail owes no parity to the reference, and the DCT scaling is most of
// its speed.
func (p *Preprocessor) Thumbnail(ctx context.Context, data []byte, maxSide int) (*image.RGBA, Info, error) {
	if maxSide < 1 {
		return nil, Info{}, apierr.New(apierr.Internal, "thumbnail_size_invalid", "thumbnail size %d is not positive", maxSide)
	}
	if err := ctxErr(ctx); err != nil {
		return nil, Info{}, err
	}
	hdr, err := p.check(data)
	if err != nil {
		return nil, Info{}, err
	}
	full := p.info(hdr, 1)
	outW, outH := fitWithin(full.Width, full.Height, maxSide)
	denom := 1
	if hdr.format == FormatJPEG && jpegExact {
		denom = thumbDenom(full.Width, full.Height, outW, outH)
	}
	bufs := p.pool.Get().(*buffers)
	defer p.release(bufs)
	v, info, err := p.decodeOriented(ctx, data, hdr, denom, bufs)
	if err != nil {
		return nil, info, err
	}
	out := image.NewRGBA(image.Rect(0, 0, outW, outH))
	if denom == 1 && outW == v.w && outH == v.h {
		copyView(v, out)
		return out, info, nil
	}
	box := [4]float32{0, 0, float32(v.w), float32(v.h)}
	if denom > 1 {
		// As in crop: the DCT-scaled image covers the full-resolution
		// geometry with a fractional box.
		box[2] = float32(float64(info.Width) / float64(denom))
		box[3] = float32(float64(info.Height) / float64(denom))
	}
	resizeFit(v, box, outW, outH, out, bufs)
	return out, info, nil
}

// fitWithin scales w×h so its longest side is maxSide (rounded, at least 1
// px), or leaves it alone when it already fits.
func fitWithin(w, h, maxSide int) (int, int) {
	if w <= maxSide && h <= maxSide {
		return w, h
	}
	if w >= h {
		return maxSide, max(1, (h*maxSide+w/2)/w)
	}
	return max(1, (w*maxSide+h/2)/h), maxSide
}

// thumbDenom is the largest JPEG DCT scaling denominator that leaves at least
// twice the output size on both sides, so the bicubic still antialiases.
func thumbDenom(w, h, outW, outH int) int {
	for _, d := range []int{8, 4, 2} {
		if (w+d-1)/d >= 2*outW && (h+d-1)/d >= 2*outH {
			return d
		}
	}
	return 1
}

// resizeFit resizes v (box per axis, in v's oriented coordinates) to
// outW×outH into dst. Both passes are the existing horizontal resampler
// (hpassNative, SIMD under cgo): the second one runs on a transposed view of
// the first pass's rows, so columns become rows; its output is therefore
// transposed, and the copy into dst turns it back.
func resizeFit(v view, box [4]float32, outW, outH int, dst *image.RGBA, s *buffers) {
	kh, kv := &s.kh, &s.kv
	computeKernel(kh, v.w, box[0], box[2], outW, 0, outW)
	computeKernel(kv, v.h, box[1], box[3], outH, 0, outH)
	yFirst, yLast := int(kv.min[0]), 0
	for i := 0; i < outH; i++ {
		yFirst = min(yFirst, int(kv.min[i]))
		yLast = max(yLast, int(kv.min[i]+kv.n[i]))
	}
	rows := yLast - yFirst
	// Pass 1: rows [yFirst, yLast) resampled to outW columns.
	tmp := s.temp(rows * outW * 3)
	hpassNative(v, kh, yFirst, rows, outW, tmp, s)
	// Pass 2: tmp seen with x running down its rows (kv, made relative to
	// yFirst) and y across its columns; output is outW rows of outH pixels.
	for i := range kv.min[:outH] {
		kv.min[i] -= int32(yFirst)
	}
	tv := view{pix: tmp, w: rows, h: outW, base: 0, dx: outW * 3, dy: 3}
	tr := s.cropBuf(outW * outH * 3)
	hpassNative(tv, kv, 0, outW, outH, tr, s)
	for y := 0; y < outH; y++ {
		row := dst.Pix[y*dst.Stride : y*dst.Stride+outW*4]
		for x := 0; x < outW; x++ {
			src := tr[(x*outH+y)*3 : (x*outH+y)*3+3 : (x*outH+y)*3+3]
			d := row[x*4 : x*4+4 : x*4+4]
			d[0], d[1], d[2], d[3] = src[0], src[1], src[2], 255
		}
	}
}

// copyView copies an oriented view into dst unchanged (no resize needed).
func copyView(v view, dst *image.RGBA) {
	for y := 0; y < v.h; y++ {
		row := dst.Pix[y*dst.Stride : y*dst.Stride+v.w*4]
		for x := 0; x < v.w; x++ {
			p := v.base + x*v.dx + y*v.dy
			d := row[x*4 : x*4+4 : x*4+4]
			d[0], d[1], d[2], d[3] = v.pix[p], v.pix[p+1], v.pix[p+2], 255
		}
	}
}
