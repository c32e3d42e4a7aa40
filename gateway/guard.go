package gateway

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/tusou/tusou/apierr"
)

// crossOrigin refuses state-changing requests (any method but GET, HEAD and
// OPTIONS) that a browser sends on behalf of another site. Multipart and
// text/plain POSTs are CORS "simple" requests: a foreign page can send them
// without a preflight, and with auth off nothing else would stop it from
// ingesting or deleting. Browsers say where a request comes from
// (Sec-Fetch-Site, else Origin compared with Host); clients that send
// neither header (curl, SDKs, tusou ingest) are not browsers and pass, as do
// the gateway's own page (same-origin) and the origins in
// server.allowed_origins. The decision is net/http's CrossOriginProtection;
// this renders its refusal as the API's JSON error.
func crossOrigin(allowed []string) gin.HandlerFunc {
	p := http.NewCrossOriginProtection()
	for _, o := range allowed {
		if err := p.AddTrustedOrigin(o); err != nil {
			// config.Validate checks every origin with the same call.
			panic("gateway: server.allowed_origins was not validated: " + err.Error())
		}
	}
	return func(c *gin.Context) {
		if err := p.Check(c.Request); err != nil {
			abortWithError(c, apierr.New(apierr.Forbidden, "cross_origin_refused",
				"cross-origin browser request refused: %s %s from %s (add the page's origin to server.allowed_origins to allow it)",
				c.Request.Method, c.Request.URL.Path, requestOrigin(c.Request)))
			return
		}
		c.Next()
	}
}

// requestOrigin names where a refused request came from, for the message.
func requestOrigin(r *http.Request) string {
	if o := r.Header.Get("Origin"); o != "" {
		return truncate(o, 128)
	}
	return "a " + truncate(r.Header.Get("Sec-Fetch-Site"), 32) + " page"
}

// pathID validates the {id} of every /v1/images/{id}... route in one place,
// before any handler runs: an id reaches Elasticsearch's URL and the blob
// store's file names, so '#', '?', '/' and dot segments must never get that
// far. Ids are the ones ingest accepts (checkID); routes without an id pass.
func pathID() gin.HandlerFunc {
	return func(c *gin.Context) {
		if id, ok := c.Params.Get("id"); ok {
			if err := checkID(id); err != nil {
				abortWithError(c, err)
				return
			}
		}
		c.Next()
	}
}
