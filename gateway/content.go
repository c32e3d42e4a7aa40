package gateway

import (
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/preprocess"
	"github.com/tusou/tusou/service"
)

// contentCSP forbids everything active should a browser open an original as
// a document: no script, no style, no frame, a sandboxed origin.
const contentCSP = "default-src 'none'; sandbox"

var hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// originalHeaders sets the response headers of an original image from its
// bytes, never from the stored document: the document's content_type can be
// rewritten by anyone who can write to the index (the :9201 listener, or
// Elasticsearch itself), and a "text/html" there would make the bytes a page
// on the gateway's origin. Only the formats tusou decodes are served as
// images (inline); anything else is an opaque download.
func originalHeaders(c *gin.Context, r io.ReadSeeker, id string, img *service.Image) error {
	head := make([]byte, preprocess.SniffLen)
	n, err := io.ReadFull(r, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return apierr.Wrap(err, apierr.Internal, "content_unreadable", "reading the original of %q: %v", id, err)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return apierr.Wrap(err, apierr.Internal, "content_unreadable", "rewinding the original of %q: %v", id, err)
	}
	format, _ := preprocess.Sniff(head[:n])
	h := c.Writer.Header()
	// pathID admits only [A-Za-z0-9._:-]; ':' is not allowed in file names
	// on Windows.
	name := strings.ReplaceAll(id, ":", "_")
	if mt := preprocess.MediaType(format); mt != "" {
		h.Set("Content-Type", mt)
		h.Set("Content-Disposition", `inline; filename="`+name+"."+extension(format)+`"`)
	} else {
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Disposition", `attachment; filename="`+name+`.bin"`)
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", contentCSP)
	h.Set("Cache-Control", "private, max-age=86400, immutable")
	// The document's sha256 is as writable as its content_type: it becomes
	// the ETag only when it has the shape ingest gives it.
	if hexSHA256.MatchString(img.SHA256) {
		h.Set("ETag", `"`+img.SHA256+`"`)
	}
	return nil
}

func extension(format string) string {
	if format == preprocess.FormatJPEG {
		return "jpg"
	}
	return format
}

// serveOriginal answers GET /v1/images/{id}/content (with Range and
// conditional requests).
func serveOriginal(c *gin.Context, r io.ReadSeeker, id string, img *service.Image) {
	if err := originalHeaders(c, r, id, img); err != nil {
		abortWithError(c, err)
		return
	}
	http.ServeContent(c.Writer, c.Request, "", img.CreatedAt, r)
}
