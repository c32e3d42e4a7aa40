package gateway

import (
	"github.com/gin-gonic/gin"

	"github.com/tusou/tusou/apierr"
)

// refreshParam reads the write routes' ?refresh= with Elasticsearch's
// meanings: wait_for (answer once searchable), true (the same, refreshing at
// once), false (answer once stored). A bare ?refresh means true, as in
// Elasticsearch; an absent one means the configured default ("").
func refreshParam(c *gin.Context) (string, error) {
	v, ok := c.GetQuery("refresh")
	switch {
	case !ok:
		return "", nil
	case v == "":
		return "true", nil
	case v == "wait_for" || v == "true" || v == "false":
		return v, nil
	}
	return "", apierr.New(apierr.InvalidArgument, "invalid_refresh",
		"query parameter refresh must be wait_for, true or false, got %q", truncate(v, 64))
}
