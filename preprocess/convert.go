package preprocess

import (
	"image"
	"image/color"
)

// rgbImage is a packed 8-bit RGB image.
type rgbImage struct {
	pix    []byte
	w, h   int
	stride int
}

// buffers is per-call scratch memory, pooled so that steady-state requests
// allocate little (the decode buffer is the big one: 3 bytes per pixel).
type buffers struct {
	dec  []byte
	tmp  []byte
	crop []byte
	line []byte
	aux  []byte
	acc  []int32
	kh   kernel
	kv   kernel
}

// slack is the spare capacity kept after the decode and intermediate
// buffers: the SIMD resampler loads and stores 4 bytes per 3-byte pixel.
const slack = 16

func (b *buffers) decode(n int) []byte {
	if cap(b.dec) < n+slack {
		b.dec = make([]byte, n, n+slack)
	}
	return b.dec[:n]
}

func (b *buffers) temp(n int) []byte {
	if cap(b.tmp) < n+slack {
		b.tmp = make([]byte, n, n+slack)
	}
	return b.tmp[:n]
}

func (b *buffers) auxBuf(n int) []byte {
	if cap(b.aux) < n {
		b.aux = make([]byte, n)
	}
	return b.aux[:n]
}

func (b *buffers) lineBuf(n int) []byte {
	if cap(b.line) < n+slack {
		b.line = make([]byte, n, n+slack)
	}
	return b.line[:n]
}

func (b *buffers) accBuf(n int) []int32 {
	if cap(b.acc) < n {
		b.acc = make([]int32, n)
	}
	return b.acc[:n]
}

// maxPooledDecode caps the decode buffer kept in the pool: a 12 MP photo
// (36 MB) is reused, a rare 50 MP one is left to the garbage collector so
// idle pods do not pin hundreds of MB.
const maxPooledDecode = 40 << 20

// muldiv255 is Pillow's MULDIV255: a*b/255 rounded, in integers.
func muldiv255(a, b int) int {
	t := a*b + 128
	return ((t >> 8) + t) >> 8
}

func clipU8(v int) uint8 {
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// compositor blends a non-premultiplied RGBA pixel over an opaque background
// exactly like Pillow's ImagingAlphaComposite (7 extra bits of precision,
// rounded divisions), which is what transformers' convert_to_rgb uses
// (alpha_composite over a white RGBA image). With an opaque background the
// output alpha is 255*255, so coef1 = a*128 and coef2 = (255-a)*128.
type compositor struct{ bg [3]uint8 }

func (c compositor) blend(v, a uint8, ch int) uint8 {
	if a == 0 {
		return c.bg[ch]
	}
	t := uint32(v)*uint32(a)*128 + uint32(c.bg[ch])*uint32(255-a)*128 + (0x80 << 7)
	return uint8((((t >> 8) + t) >> 8) >> 7)
}

func (c compositor) rgba(d []byte, r, g, b, a uint8) {
	if a == 255 {
		d[0], d[1], d[2] = r, g, b
		return
	}
	d[0], d[1], d[2] = c.blend(r, a, 0), c.blend(g, a, 1), c.blend(b, a, 2)
}

// toRGB converts a decoded Go image to packed RGB the way the reference
// does: 16-bit samples keep their high byte (>>8), transparency is
// composited over bg, gray is replicated.
func toRGB(img image.Image, bg [3]uint8, bufs *buffers) rgbImage {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	out := rgbImage{pix: bufs.decode(w * h * 3), w: w, h: h, stride: w * 3}
	comp := compositor{bg}
	switch m := img.(type) {
	case *image.Gray:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+w]
			d := out.pix[y*out.stride : y*out.stride+w*3]
			for x, v := range row {
				d[3*x], d[3*x+1], d[3*x+2] = v, v, v
			}
		}
	case *image.Gray16:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+w*2]
			d := out.pix[y*out.stride : y*out.stride+w*3]
			for x := 0; x < w; x++ {
				v := row[2*x] // big-endian high byte
				d[3*x], d[3*x+1], d[3*x+2] = v, v, v
			}
		}
	case *image.NRGBA:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+w*4]
			d := out.pix[y*out.stride : y*out.stride+w*3]
			for x := 0; x < w; x++ {
				s := row[4*x : 4*x+4 : 4*x+4]
				comp.rgba(d[3*x:3*x+3:3*x+3], s[0], s[1], s[2], s[3])
			}
		}
	case *image.RGBA:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+w*4]
			d := out.pix[y*out.stride : y*out.stride+w*3]
			for x := 0; x < w; x++ {
				s := row[4*x : 4*x+4 : 4*x+4]
				if s[3] == 255 {
					d[3*x], d[3*x+1], d[3*x+2] = s[0], s[1], s[2]
				} else {
					n := color.NRGBAModel.Convert(color.RGBA{s[0], s[1], s[2], s[3]}).(color.NRGBA)
					comp.rgba(d[3*x:3*x+3:3*x+3], n.R, n.G, n.B, n.A)
				}
			}
		}
	case *image.NRGBA64:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+w*8]
			d := out.pix[y*out.stride : y*out.stride+w*3]
			for x := 0; x < w; x++ {
				s := row[8*x : 8*x+8 : 8*x+8]
				comp.rgba(d[3*x:3*x+3:3*x+3], s[0], s[2], s[4], s[6])
			}
		}
	case *image.RGBA64:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+w*8]
			d := out.pix[y*out.stride : y*out.stride+w*3]
			for x := 0; x < w; x++ {
				s := row[8*x : 8*x+8 : 8*x+8]
				if s[6] == 255 && s[7] == 255 {
					d[3*x], d[3*x+1], d[3*x+2] = s[0], s[2], s[4]
				} else {
					n := color.NRGBA64Model.Convert(m.RGBA64At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA64)
					comp.rgba(d[3*x:3*x+3:3*x+3], uint8(n.R>>8), uint8(n.G>>8), uint8(n.B>>8), uint8(n.A>>8))
				}
			}
		}
	case *image.Paletted:
		// Composite each palette entry once (Pillow's P -> RGBA uses the
		// palette colour and the tRNS alpha of the index).
		var lut [256][3]byte
		for i := range lut {
			var c color.NRGBA
			if i < len(m.Palette) {
				c = color.NRGBAModel.Convert(m.Palette[i]).(color.NRGBA)
			} else {
				c = color.NRGBA{A: 255} // out-of-range index: black, like libgif
			}
			comp.rgba(lut[i][:], c.R, c.G, c.B, c.A)
		}
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+w]
			d := out.pix[y*out.stride : y*out.stride+w*3]
			for x, idx := range row {
				c := &lut[idx]
				d[3*x], d[3*x+1], d[3*x+2] = c[0], c[1], c[2]
			}
		}
	case *image.YCbCr:
		// Go's own conversion and nearest chroma (the !cgo JPEG path).
		for y := 0; y < h; y++ {
			d := out.pix[y*out.stride : y*out.stride+w*3]
			for x := 0; x < w; x++ {
				yi := m.YOffset(b.Min.X+x, b.Min.Y+y)
				ci := m.COffset(b.Min.X+x, b.Min.Y+y)
				d[3*x], d[3*x+1], d[3*x+2] = color.YCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
			}
		}
	default:
		for y := 0; y < h; y++ {
			d := out.pix[y*out.stride : y*out.stride+w*3]
			for x := 0; x < w; x++ {
				n := color.NRGBA64Model.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA64)
				comp.rgba(d[3*x:3*x+3:3*x+3], uint8(n.R>>8), uint8(n.G>>8), uint8(n.B>>8), uint8(n.A>>8))
			}
		}
	}
	return out
}
