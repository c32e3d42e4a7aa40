// Package thumbnail makes the small JPEG previews the search page shows:
// the stored original, decoded by the gateway's own decoder (package
// preprocess: same limits as ingest, EXIF orientation applied), resized to
// fit a square of one of a few sizes, encoded as JPEG and kept in a small
// in-process cache bounded in bytes.
//
// The output is always a JPEG this package encoded itself, whatever the
// original was, so a thumbnail can never be active content (SVG, HTML).
// Transparency is composited over preprocess.background (white by default),
// which is also what the model sees; one output type keeps the route simple.
package thumbnail

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"strconv"
	"strings"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/preprocess"
	"github.com/tusou/tusou/service"
)

// Sizes are the allowed longest sides in pixels. A few fixed sizes keep the
// cache hit rate high and stop clients from asking for arbitrary work.
var Sizes = []int{128, 256, 512}

// DefaultSize is the size when the request names none.
const DefaultSize = 256

// Version is part of every ETag: bump it whenever the bytes made for the same
// original change (resampler, encoder, quality), so caches drop old copies.
const Version = 1

// Quality is the JPEG quality: previews, not archives.
const Quality = 80

// DefaultCacheBytes bounds the in-process cache: about 1,000 thumbnails of
// 256 px (~20-30 KB each).
const DefaultCacheBytes = 32 << 20

// Source returns the original bytes and description of an image
// (service.Service).
type Source interface {
	Content(ctx context.Context, id string) (io.ReadSeekCloser, *service.Image, error)
}

// Decoder decodes and resizes (preprocess.Preprocessor).
type Decoder interface {
	Thumbnail(ctx context.Context, data []byte, maxSide int) (*image.RGBA, preprocess.Info, error)
}

// Limiter bounds concurrent CPU-heavy work (embed.Limiter): thumbnails share
// the decode workers with ingest, so a page of 50 results cannot take more
// CPU or memory than a burst of uploads.
type Limiter interface {
	Do(ctx context.Context, fn func() error) error
}

// Maker makes and caches thumbnails. It is safe for concurrent use.
type Maker struct {
	src      Source
	dec      Decoder
	lim      Limiter
	maxBytes int64
	cache    *lru
}

// New returns a Maker reading originals from src. maxBytes is the largest
// original read (preprocess.max_bytes: bigger ones were never ingested);
// cacheBytes bounds the cache (0 disables it).
func New(src Source, dec Decoder, lim Limiter, maxBytes, cacheBytes int64) *Maker {
	return &Maker{src: src, dec: dec, lim: lim, maxBytes: maxBytes, cache: newLRU(cacheBytes)}
}

// Thumb is one answer of Get.
type Thumb struct {
	// ETag is the quoted entity tag: the original's SHA-256, the size and
	// Version, so it changes exactly when the bytes would.
	ETag string
	// NotModified is true when the request's If-None-Match matched ETag;
	// Data is then nil.
	NotModified bool
	// ContentType is always image/jpeg.
	ContentType string
	// Data is the encoded thumbnail.
	Data []byte
	// Filename is a safe name for Content-Disposition.
	Filename string
}

// ParseSize validates the size query parameter ("" means DefaultSize).
func ParseSize(s string) (int, error) {
	if s == "" {
		return DefaultSize, nil
	}
	n, err := strconv.Atoi(s)
	if err == nil {
		for _, v := range Sizes {
			if n == v {
				return n, nil
			}
		}
	}
	allowed := make([]string, len(Sizes))
	for i, v := range Sizes {
		allowed[i] = strconv.Itoa(v)
	}
	return 0, apierr.New(apierr.InvalidArgument, "invalid_size", "size must be one of %s, got %q",
		strings.Join(allowed, ", "), truncate(s, 16))
}

// ETag returns the quoted entity tag of the thumbnail of an original with
// this SHA-256 at size.
func ETag(sha256 string, size int) string {
	return fmt.Sprintf(`"%s-%d-t%d"`, sha256, size, Version)
}

// Get returns the thumbnail of image id at size (one of Sizes). When
// ifNoneMatch (the request header) names its ETag, nothing is decoded and
// the answer is NotModified.
func (m *Maker) Get(ctx context.Context, id string, size int, ifNoneMatch string) (Thumb, error) {
	r, img, err := m.src.Content(ctx, id)
	if err != nil {
		return Thumb{}, err
	}
	defer r.Close()
	t := Thumb{ETag: ETag(img.SHA256, size), ContentType: "image/jpeg", Filename: filename(id, size)}
	if etagMatches(ifNoneMatch, t.ETag) {
		t.NotModified = true
		return t, nil
	}
	if data, ok := m.cache.get(t.ETag); ok {
		t.Data = data
		return t, nil
	}
	// The limit is checked again by the decoder; reading one byte more than
	// it lets the decoder name the problem.
	orig, err := io.ReadAll(io.LimitReader(r, m.maxBytes+1))
	if err != nil {
		return Thumb{}, apierr.Wrap(err, apierr.Internal, "blob_read_failed", "could not read the image")
	}
	err = m.lim.Do(ctx, func() error {
		thumb, _, err := m.dec.Thumbnail(ctx, orig, size)
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, thumb, &jpeg.Options{Quality: Quality}); err != nil {
			return apierr.Wrap(err, apierr.Internal, "thumbnail_encode_failed", "could not encode the thumbnail")
		}
		t.Data = buf.Bytes()
		return nil
	})
	if err != nil {
		return Thumb{}, err
	}
	m.cache.add(t.ETag, t.Data)
	return t, nil
}

// etagMatches implements If-None-Match's weak comparison for a list of tags
// or "*".
func etagMatches(header, etag string) bool {
	for _, tag := range strings.Split(header, ",") {
		tag = strings.TrimSpace(tag)
		if tag == "*" || strings.TrimPrefix(tag, "W/") == etag {
			return true
		}
	}
	return false
}

// filename is id reduced to characters that are safe in a quoted
// Content-Disposition filename.
func filename(id string, size int) string {
	var b strings.Builder
	for _, r := range truncate(id, 64) {
		if r < 128 && (r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return fmt.Sprintf("%s-%d.jpg", b.String(), size)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
