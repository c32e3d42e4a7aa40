//go:build !cgo

package preprocess

import (
	"bytes"
	"image/png"
)

// decodePNG uses the standard library without cgo (same pixels, slower).
func decodePNG(data []byte, hdr header, bg [3]uint8, bufs *buffers) (rgbImage, error) {
	m, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		return rgbImage{}, err
	}
	return toRGB(m, bg, bufs), nil
}
