package preprocess

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/gif"
)

// decodeAny decodes data (already sniffed and size-checked) to packed RGB at
// 1/denom scale where the format supports it (JPEG), else full size. A panic
// inside a decoder becomes an error: a hostile file must never take the
// process down.
func decodeAny(data []byte, hdr header, denom int, bg [3]uint8, bufs *buffers) (img rgbImage, err error) {
	defer func() {
		if r := recover(); r != nil {
			img, err = rgbImage{}, fmt.Errorf("decoder panic: %v", r)
		}
	}()
	switch hdr.format {
	case FormatJPEG:
		return decodeJPEG(data, hdr, denom, bufs)
	case FormatPNG:
		return decodePNG(data, hdr, bg, bufs)
	case FormatGIF:
		return decodeGIF(data, hdr, bg, bufs)
	case FormatWebP:
		return decodeWebP(data, bg, bufs)
	}
	return rgbImage{}, fmt.Errorf("no decoder for %s", hdr.format)
}

// decodeGIF decodes the first frame onto a canvas of the logical screen size,
// as Pillow does: outside the frame rectangle the canvas holds the
// transparent index when the frame has one (so it becomes background after
// compositing), else index 0.
func decodeGIF(data []byte, hdr header, bg [3]uint8, bufs *buffers) (rgbImage, error) {
	m, err := gif.Decode(bytes.NewReader(data))
	if err != nil {
		return rgbImage{}, err
	}
	p, ok := m.(*image.Paletted)
	if !ok {
		return toRGB(m, bg, bufs), nil
	}
	sw, sh := hdr.width, hdr.height
	if p.Rect.Min.X == 0 && p.Rect.Min.Y == 0 && p.Rect.Dx() == sw && p.Rect.Dy() == sh {
		return toRGB(p, bg, bufs), nil
	}
	fill := uint8(0)
	for i, c := range p.Palette {
		if _, _, _, a := c.RGBA(); a == 0 {
			fill = uint8(i) // Go marks the transparent index as RGBA{}
			break
		}
	}
	canvas := image.NewPaletted(image.Rect(0, 0, sw, sh), p.Palette)
	if fill != 0 {
		for i := range canvas.Pix {
			canvas.Pix[i] = fill
		}
	}
	r := p.Rect.Intersect(canvas.Rect)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		copy(canvas.Pix[y*canvas.Stride+r.Min.X:y*canvas.Stride+r.Max.X], p.Pix[p.PixOffset(r.Min.X, y):p.PixOffset(r.Max.X, y)])
	}
	if len(canvas.Palette) == 0 {
		canvas.Palette = color.Palette{color.Black}
	}
	return toRGB(canvas, bg, bufs), nil
}
