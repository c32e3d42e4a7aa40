package gateway

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/thumbnail"
	"github.com/tusou/tusou/ui"
)

// Thumbnails makes image previews (thumbnail.Maker).
type Thumbnails interface {
	Get(ctx context.Context, id string, size int, ifNoneMatch string) (thumbnail.Thumb, error)
}

// registerUI adds the search page (outside /v1: it must load without an API
// key, then asks the user for one) and the thumbnail route (inside /v1,
// behind auth).
func registerUI(r *gin.Engine, v1 *gin.RouterGroup, thumbs Thumbnails) {
	page := gin.WrapH(http.StripPrefix("/ui", ui.Handler()))
	r.GET("/", func(c *gin.Context) { c.Redirect(http.StatusFound, "/ui/") })
	r.GET("/ui/*filepath", page)
	t := thumbnailHandler{thumbs: thumbs}
	v1.GET("/images/:id/thumbnail", t.get)
}

type thumbnailHandler struct{ thumbs Thumbnails }

// get serves a JPEG preview. The headers make sure it can only ever be shown
// as an image: a fixed image type, nosniff, and a CSP that forbids anything
// active should a browser open it as a document.
func (t thumbnailHandler) get(c *gin.Context) {
	size, err := thumbnail.ParseSize(c.Query("size"))
	if err != nil {
		abortWithError(c, err)
		return
	}
	if t.thumbs == nil {
		abortWithError(c, apierr.New(apierr.NotFound, "thumbnails_disabled", "this gateway does not make thumbnails"))
		return
	}
	th, err := t.thumbs.Get(c.Request.Context(), c.Param("id"), size, c.GetHeader("If-None-Match"))
	if err != nil {
		abortWithError(c, err)
		return
	}
	h := c.Writer.Header()
	h.Set("ETag", th.ETag)
	// The ETag names the original's bytes, so a cached copy stays right for
	// as long as the id keeps those bytes; private: API keys may guard it.
	h.Set("Cache-Control", "private, max-age=86400, immutable")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	if th.NotModified {
		c.Status(http.StatusNotModified)
		return
	}
	h.Set("Content-Disposition", `inline; filename="`+th.Filename+`"`)
	c.Data(http.StatusOK, th.ContentType, th.Data)
}
