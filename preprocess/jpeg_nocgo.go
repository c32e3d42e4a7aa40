//go:build !cgo

package preprocess

import (
	"bytes"
	"image"
	"image/jpeg"
)

// jpegExact is false without cgo: Go's image/jpeg uses a different IDCT and
// chroma upsampling than libjpeg-turbo, so crops differ from Pillow's by a few
// levels, and there is no DCT scaling, so large JPEGs decode several times
// slower. Production builds use cgo and libturbojpeg.
const jpegExact = false

// decodeJPEG decodes data with the standard library (always full size; denom
// is ignored).
func decodeJPEG(data []byte, hdr header, denom int, bufs *buffers) (rgbImage, error) {
	img, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		return rgbImage{}, err
	}
	if c, ok := img.(*image.CMYK); ok {
		// Go returns CMYK with Adobe's inversion already undone; apply
		// Pillow's CMYK->RGB conversion.
		b := c.Bounds()
		w, h := b.Dx(), b.Dy()
		buf := bufs.decode(w * h * 3)
		for y := 0; y < h; y++ {
			row := c.Pix[y*c.Stride : y*c.Stride+w*4]
			for x := 0; x < w; x++ {
				s := row[x*4 : x*4+4 : x*4+4]
				nk := 255 - int(s[3])
				d := buf[(y*w+x)*3 : (y*w+x)*3+3 : (y*w+x)*3+3]
				d[0] = clipU8(nk - muldiv255(int(s[0]), nk))
				d[1] = clipU8(nk - muldiv255(int(s[1]), nk))
				d[2] = clipU8(nk - muldiv255(int(s[2]), nk))
			}
		}
		return rgbImage{pix: buf, w: w, h: h, stride: w * 3}, nil
	}
	return toRGB(img, [3]uint8{255, 255, 255}, bufs), nil
}
