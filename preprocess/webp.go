package preprocess

import (
	"bytes"
	"image"

	"golang.org/x/image/webp"
)

// decodeWebP decodes with golang.org/x/image/webp. Lossless images come back
// as NRGBA (exact). Lossy ones come back as the raw 4:2:0 planes, which are
// converted here the way libwebp (and so Pillow) does it: "fancy" bilinear
// chroma upsampling (UpsampleRgbaLinePair) and libwebp's 14-bit fixed-point
// YUV->RGB (VP8YuvToRgb), so the result matches Pillow byte for byte.
func decodeWebP(data []byte, bg [3]uint8, bufs *buffers) (rgbImage, error) {
	img, err := webp.Decode(bytes.NewReader(data))
	if err != nil {
		return rgbImage{}, err
	}
	switch m := img.(type) {
	case *image.YCbCr:
		if m.SubsampleRatio == image.YCbCrSubsampleRatio420 {
			return webpFancy(m, nil, 0, bg, bufs), nil
		}
	case *image.NYCbCrA:
		if m.SubsampleRatio == image.YCbCrSubsampleRatio420 {
			return webpFancy(&m.YCbCr, m.A, m.AStride, bg, bufs), nil
		}
	}
	return toRGB(img, bg, bufs), nil
}

// libwebp's VP8YUVToR/G/B (src/dsp/yuv.h): 14-bit fixed point, YUV_FIX2 = 6.
func webpMultHi(v, coeff int) int { return (v * coeff) >> 8 }

func webpClip8(v int) uint8 {
	const mask = (256 << 6) - 1
	if v&^mask == 0 {
		return uint8(v >> 6)
	}
	if v < 0 {
		return 0
	}
	return 255
}

func webpYUVToRGB(y, u, v int, d []byte) {
	yy := webpMultHi(y, 19077)
	d[0] = webpClip8(yy + webpMultHi(v, 26149) - 14234)
	d[1] = webpClip8(yy - webpMultHi(u, 6419) - webpMultHi(v, 13320) + 8708)
	d[2] = webpClip8(yy + webpMultHi(u, 33050) - 17685)
}

// webpFancy converts 4:2:0 planes to RGB with libwebp's fancy upsampler
// (src/dsp/upsampling.c UPSAMPLE_FUNC, driven by EmitFancyRGB in
// src/dec/io_dec.c: row 0 and the last row of an even-height image use one
// chroma row; rows 2k-1 and 2k interpolate chroma rows k-1 and k).
func webpFancy(m *image.YCbCr, alpha []byte, aStride int, bg [3]uint8, bufs *buffers) rgbImage {
	b := m.Rect
	w, h := b.Dx(), b.Dy()
	out := rgbImage{pix: bufs.decode(w * h * 3), w: w, h: h, stride: w * 3}
	yRow := func(y int) []byte { return m.Y[y*m.YStride : y*m.YStride+w] }
	cw := (w + 1) / 2
	uRow := func(cy int) []byte { return m.Cb[cy*m.CStride : cy*m.CStride+cw] }
	vRow := func(cy int) []byte { return m.Cr[cy*m.CStride : cy*m.CStride+cw] }
	dRow := func(y int) []byte { return out.pix[y*out.stride : (y+1)*out.stride] }

	pair := func(topY, botY []byte, topU, topV, curU, curV []byte, topD, botD []byte) {
		tlU, tlV := int(topU[0]), int(topV[0])
		lU, lV := int(curU[0]), int(curV[0])
		webpYUVToRGB(int(topY[0]), (3*tlU+lU+2)>>2, (3*tlV+lV+2)>>2, topD[0:3])
		if botY != nil {
			webpYUVToRGB(int(botY[0]), (3*lU+tlU+2)>>2, (3*lV+tlV+2)>>2, botD[0:3])
		}
		last := (w - 1) >> 1
		for x := 1; x <= last; x++ {
			tU, tV := int(topU[x]), int(topV[x])
			u, v := int(curU[x]), int(curV[x])
			avgU := tlU + tU + lU + u + 8
			avgV := tlV + tV + lV + v + 8
			d12U := (avgU + 2*(tU+lU)) >> 3
			d12V := (avgV + 2*(tV+lV)) >> 3
			d03U := (avgU + 2*(tlU+u)) >> 3
			d03V := (avgV + 2*(tlV+v)) >> 3
			webpYUVToRGB(int(topY[2*x-1]), (d12U+tlU)>>1, (d12V+tlV)>>1, topD[(2*x-1)*3:(2*x-1)*3+3])
			webpYUVToRGB(int(topY[2*x]), (d03U+tU)>>1, (d03V+tV)>>1, topD[2*x*3:2*x*3+3])
			if botY != nil {
				webpYUVToRGB(int(botY[2*x-1]), (d03U+lU)>>1, (d03V+lV)>>1, botD[(2*x-1)*3:(2*x-1)*3+3])
				webpYUVToRGB(int(botY[2*x]), (d12U+u)>>1, (d12V+v)>>1, botD[2*x*3:2*x*3+3])
			}
			tlU, tlV, lU, lV = tU, tV, u, v
		}
		if w&1 == 0 {
			webpYUVToRGB(int(topY[w-1]), (3*tlU+lU+2)>>2, (3*tlV+lV+2)>>2, topD[(w-1)*3:w*3])
			if botY != nil {
				webpYUVToRGB(int(botY[w-1]), (3*lU+tlU+2)>>2, (3*lV+tlV+2)>>2, botD[(w-1)*3:w*3])
			}
		}
	}

	pair(yRow(0), nil, uRow(0), vRow(0), uRow(0), vRow(0), dRow(0), nil)
	for y := 1; y+1 < h; y += 2 {
		k := (y + 1) / 2
		pair(yRow(y), yRow(y+1), uRow(k-1), vRow(k-1), uRow(k), vRow(k), dRow(y), dRow(y+1))
	}
	if h > 1 && h&1 == 0 {
		k := (h - 1) / 2
		pair(yRow(h-1), nil, uRow(k), vRow(k), uRow(k), vRow(k), dRow(h-1), nil)
	}

	if alpha != nil {
		comp := compositor{bg}
		for y := 0; y < h; y++ {
			a := alpha[y*aStride : y*aStride+w]
			d := dRow(y)
			for x, av := range a {
				if av != 255 {
					p := d[3*x : 3*x+3 : 3*x+3]
					comp.rgba(p, p[0], p[1], p[2], av)
				}
			}
		}
	}
	return out
}
