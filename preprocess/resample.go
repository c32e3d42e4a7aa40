package preprocess

import "math"

// This file reproduces Pillow's ImagingResample (src/libImaging/Resample.c)
// for 8-bit RGB with the BICUBIC filter, bit for bit:
//
//   - precompute_coeffs: scale = (in1-in0)/outSize, filterscale = max(scale, 1),
//     support = 2*filterscale, taps [int(center-support+0.5), int(center+support+0.5)),
//     weights bicubic((x+xmin-center+0.5)/filterscale) with a = -0.5, normalised
//     to sum 1 in float64;
//   - normalize_coeffs_8bpc: fixed point with PRECISION_BITS = 22, rounded
//     away from zero;
//   - a horizontal pass into an 8-bit intermediate (clip8 between passes),
//     then a vertical pass, each accumulator starting at 1<<21 (rounding);
//   - the horizontal pass only covers the source rows the vertical pass reads
//     (Pillow's ybox_first/ybox_last).
//
// Every output pixel depends only on its own coefficients, so computing only
// the centre crop's rows and columns gives the same bytes as resizing the
// whole image and cropping afterwards, with a fraction of the work.
//
// Floating-point expressions are written with explicit float64 conversions
// around products so the Go compiler never fuses them into FMA instructions
// (which round differently from the SSE2 code Pillow's wheels run).

const precisionBits = 22

func bicubic(x float64) float64 {
	const a = -0.5
	if x < 0 {
		x = -x
	}
	if x < 1 {
		// ((a+2)x - (a+3)) x x + 1
		t := float64(float64((a+2.0)*x) - (a + 3.0))
		t = float64(t * x)
		t = float64(t * x)
		return t + 1
	}
	if x < 2 {
		// (((x-5)x + 8)x - 4) a
		t := float64(float64((x-5)*x) + 8)
		t = float64(float64(t*x) - 4)
		return float64(t * a)
	}
	return 0
}

// kernel holds fixed-point taps for a run of consecutive output positions.
type kernel struct {
	ksize  int     // taps per output (stride of coeffs)
	min    []int32 // first source index per output
	n      []int32 // number of taps per output
	coeffs []int32 // len(min)*ksize
}

// computeKernel returns Pillow's coefficients for outputs [from, from+count)
// of a resize of inSize source pixels (box in0..in1) to outSize pixels.
func computeKernel(k *kernel, inSize int, in0, in1 float32, outSize, from, count int) {
	scale := float64(in1-in0) / float64(outSize)
	filterscale := scale
	if filterscale < 1 {
		filterscale = 1
	}
	support := float64(2.0 * filterscale)
	ksize := int(math.Ceil(support))*2 + 1
	k.ksize = ksize
	k.min = growInt32s(k.min, count)
	k.n = growInt32s(k.n, count)
	k.coeffs = growInt32s(k.coeffs, count*ksize)
	var w [64]float64
	ws := w[:]
	if ksize > len(ws) {
		ws = make([]float64, ksize)
	}
	ss := 1.0 / filterscale
	for i := 0; i < count; i++ {
		xx := from + i
		center := float64(in0) + float64((float64(xx)+0.5)*scale)
		ww := 0.0
		xmin := int(center - support + 0.5)
		if xmin < 0 {
			xmin = 0
		}
		xmax := int(center + support + 0.5)
		if xmax > inSize {
			xmax = inSize
		}
		xmax -= xmin
		if xmax > ksize {
			// Cannot happen for finite inputs (the window is at most
			// 2*ceil(support)+1 wide); guard the slice anyway.
			xmax = ksize
		}
		for x := 0; x < xmax; x++ {
			v := bicubic(float64(float64(float64(float64(x+xmin)-center)+0.5) * ss))
			ws[x] = v
			ww += v
		}
		c := k.coeffs[i*ksize : (i+1)*ksize]
		for x := 0; x < xmax; x++ {
			v := ws[x]
			if ww != 0 {
				v /= ww
			}
			if v < 0 {
				c[x] = int32(-0.5 + float64(v*(1<<precisionBits)))
			} else {
				c[x] = int32(0.5 + float64(v*(1<<precisionBits)))
			}
		}
		for x := xmax; x < ksize; x++ {
			c[x] = 0
		}
		if xmax < 0 {
			xmax = 0
		}
		k.min[i] = int32(xmin)
		k.n[i] = int32(xmax)
	}
}

func clip8(v int32) uint8 {
	v >>= precisionBits
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// view addresses an RGB buffer through an EXIF orientation: oriented pixel
// (x, y) starts at pix[base + x*dx + y*dy].
type view struct {
	pix    []byte
	w, h   int
	base   int
	dx, dy int
}

// orientedView maps EXIF orientation o (1..8) of img, matching Pillow's
// exif_transpose: 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM,
// 5 TRANSPOSE, 6 ROTATE_270, 7 TRANSVERSE, 8 ROTATE_90.
func orientedView(img rgbImage, o int) view {
	transpose := o >= 5
	var flipX, flipY bool // applied to the source coordinates
	switch o {
	case 2:
		flipX = true
	case 3:
		flipX, flipY = true, true
	case 4:
		flipY = true
	case 6:
		flipY = true
	case 7:
		flipX, flipY = true, true
	case 8:
		flipX = true
	}
	sdx, sdy := 3, img.stride
	base := 0
	if flipX {
		base += (img.w - 1) * 3
		sdx = -3
	}
	if flipY {
		base += (img.h - 1) * img.stride
		sdy = -img.stride
	}
	if transpose {
		// Oriented x walks source rows, oriented y walks source columns.
		return view{pix: img.pix, w: img.h, h: img.w, base: base, dx: sdy, dy: sdx}
	}
	return view{pix: img.pix, w: img.w, h: img.h, base: base, dx: sdx, dy: sdy}
}

// resizeCrop resizes v (box in0..in1 per axis, in v's oriented coordinates)
// to outW×outH with Pillow's bicubic and writes the size×size window at
// (left, top) into dst as packed RGB.
func resizeCrop(v view, box [4]float32, outW, outH, left, top, size int, dst []byte, s *buffers) {
	needH := outW != v.w || box[0] != 0 || box[2] != float32(outW)
	needV := outH != v.h || box[1] != 0 || box[3] != float32(outH)

	kv := &s.kv
	var yFirst, yLast int
	if needV {
		computeKernel(kv, v.h, box[1], box[3], outH, top, size)
		yFirst = int(kv.min[0])
		yLast = int(kv.min[size-1] + kv.n[size-1])
		for i := 1; i < size; i++ {
			// Pillow's bounds are monotonic; this only guards the slices.
			yFirst = min(yFirst, int(kv.min[i]))
			yLast = max(yLast, int(kv.min[i]+kv.n[i]))
		}
	} else {
		yFirst, yLast = top, top+size
	}
	rows := yLast - yFirst
	if rows < 0 {
		rows = 0
	}

	// src addresses the (horizontally resampled) rows [yFirst, yLast) and
	// the crop's columns: pixel (i, r) at src[sbase + i*sdx + r*sdy].
	var src []byte
	var sbase, sdx, sdy int
	if needH {
		kh := &s.kh
		computeKernel(kh, v.w, box[0], box[2], outW, left, size)
		tmp := s.temp(rows * size * 3)
		hpassNative(v, kh, yFirst, rows, size, tmp, s)
		if !needV {
			copy(dst, tmp[:size*size*3])
			return
		}
		vpassNative(tmp, size*3, kv, yFirst, size, dst)
		return
	} else {
		src, sbase, sdx, sdy = v.pix, v.base+left*v.dx+yFirst*v.dy, v.dx, v.dy
	}

	if !needV {
		for r := 0; r < size; r++ {
			for i := 0; i < size; i++ {
				p := sbase + i*sdx + r*sdy
				copy(dst[(r*size+i)*3:(r*size+i)*3+3], src[p:p+3])
			}
		}
		return
	}
	verticalPass(src, sbase, sdx, sdy, kv, yFirst, size, dst, s.accBuf(size*3))
}

// horizontalPass resamples rows [y0, y0+rows) of v along x with kh (whose
// outputs are the crop columns) into tmp, size RGB pixels per row.
func horizontalPass(v view, kh *kernel, y0, rows, size int, tmp []byte) {
	const half = int32(1) << (precisionBits - 1)
	pix := v.pix
	ks := kh.ksize
	for r := 0; r < rows; r++ {
		rowBase := v.base + (y0+r)*v.dy
		out := tmp[r*size*3 : (r+1)*size*3]
		for i := 0; i < size; i++ {
			n := int(kh.n[i])
			k := kh.coeffs[i*ks : i*ks+n]
			s0, s1, s2 := half, half, half
			p := rowBase + int(kh.min[i])*v.dx
			if v.dx == 3 {
				row := pix[p : p+3*n]
				for j, c := range k {
					px := row[3*j : 3*j+3 : 3*j+3]
					s0 += int32(px[0]) * c
					s1 += int32(px[1]) * c
					s2 += int32(px[2]) * c
				}
			} else {
				for _, c := range k {
					px := pix[p : p+3 : p+3]
					s0 += int32(px[0]) * c
					s1 += int32(px[1]) * c
					s2 += int32(px[2]) * c
					p += v.dx
				}
			}
			o := out[i*3 : i*3+3 : i*3+3]
			o[0], o[1], o[2] = clip8(s0), clip8(s1), clip8(s2)
		}
	}
}

// verticalPass resamples along y: output row r reads rows kv.min[r]-y0 ... of
// src (addressed as pixel (i, row) at src[base + i*dx + row*dy]). acc holds
// size*3 accumulators so contiguous rows are read sequentially.
func verticalPass(src []byte, base, dx, dy int, kv *kernel, y0, size int, dst []byte, acc []int32) {
	const half = int32(1) << (precisionBits - 1)
	ks := kv.ksize
	n3 := size * 3
	acc = acc[:n3]
	for r := 0; r < size; r++ {
		n := int(kv.n[r])
		k := kv.coeffs[r*ks : r*ks+n]
		rb := base + (int(kv.min[r])-y0)*dy
		for i := range acc {
			acc[i] = half
		}
		if dx == 3 {
			for j, c := range k {
				p := rb + j*dy
				row := src[p : p+n3]
				for i, b := range row {
					acc[i] += int32(b) * c
				}
			}
		} else {
			for j, c := range k {
				p := rb + j*dy
				for i := 0; i < size; i++ {
					px := src[p+i*dx : p+i*dx+3 : p+i*dx+3]
					a := acc[i*3 : i*3+3 : i*3+3]
					a[0] += int32(px[0]) * c
					a[1] += int32(px[1]) * c
					a[2] += int32(px[2]) * c
				}
			}
		}
		out := dst[r*n3 : (r+1)*n3]
		for i, a := range acc {
			out[i] = clip8(a)
		}
	}
}

func growInt32s(s []int32, n int) []int32 {
	if cap(s) < n {
		return make([]int32, n)
	}
	return s[:n]
}
