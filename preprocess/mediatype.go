package preprocess

// MediaType returns the media type of a format tusou decodes ("jpeg" →
// "image/jpeg"), or "" for any other format name.
func MediaType(format string) string {
	switch format {
	case FormatJPEG, FormatPNG, FormatGIF, FormatWebP:
		return "image/" + format
	}
	return ""
}
