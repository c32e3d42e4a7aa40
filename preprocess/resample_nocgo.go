//go:build !cgo

package preprocess

// Without cgo the resampler runs the pure Go loops (same bytes, slower).

func hpassNative(v view, kh *kernel, y0, rows, size int, tmp []byte, _ *buffers) {
	horizontalPass(v, kh, y0, rows, size, tmp)
}

func vpassNative(src []byte, rowBytes int, kv *kernel, y0, size int, dst []byte) {
	verticalPass(src, 0, 3, rowBytes, kv, y0, size, dst, make([]int32, size*3))
}
