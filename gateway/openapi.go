package gateway

import (
	_ "embed"

	"github.com/gin-gonic/gin"
)

// openAPIDoc is the REST API's contract. A test checks that its paths and
// methods match the router's routes exactly.
//
//go:embed openapi.json
var openAPIDoc []byte

func serveOpenAPI(c *gin.Context) {
	c.Data(200, "application/json", openAPIDoc)
}
