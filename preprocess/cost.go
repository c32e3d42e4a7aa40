package preprocess

// decodeOverhead covers what decoding holds besides the pixel buffers:
// resampler rows and kernels, libjpeg's and libpng's row buffers.
const decodeOverhead = 1 << 20

// DecodeCost estimates, from the header alone, the bytes that decoding data
// holds at its peak, so a caller can charge them to a memory budget before
// the decoder allocates them. An image Preprocess would refuse without
// decoding costs 0.
//
// JPEG: the (DCT-scaled) output at 4 bytes per pixel (CMYK is decoded as 4
// channels), plus, for progressive files, libjpeg's whole-image coefficient
// buffer (2 bytes per sample at full resolution; every scan refines it).
// Other formats: the full-size RGB output plus an RGBA (or paletted)
// intermediate, 7 bytes per pixel.
func (p *Preprocessor) DecodeCost(data []byte) int64 {
	hdr, err := p.check(data)
	if err != nil {
		return 0
	}
	w, h := int64(hdr.width), int64(hdr.height)
	if hdr.format != FormatJPEG {
		return 7*w*h + decodeOverhead
	}
	d := int64(1)
	if p.cfg.JPEGDCTScaling && jpegExact {
		d = int64(jpegDenom(hdr.width, hdr.height, p.cfg.DCTMinSideRatio*float64(p.cfg.Size)))
	}
	cost := 4*((w+d-1)/d)*((h+d-1)/d) + decodeOverhead
	if hdr.jpegProgressive {
		cost += 2 * w * h * int64(hdr.jpegComponents)
	}
	return cost
}
