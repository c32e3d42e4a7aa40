package gateway

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/service"
)

// nearDuplicatesParam reads ingest's ?near_duplicates=true|false and returns
// the configured cosine threshold when asked, nil otherwise.
func (h *handlers) nearDuplicatesParam(c *gin.Context) (*float32, error) {
	v, ok := c.GetQuery("near_duplicates")
	if !ok {
		return nil, nil
	}
	on, err := strconv.ParseBool(v)
	if v == "" {
		on, err = true, nil // a bare ?near_duplicates asks, like ?refresh
	}
	if err != nil {
		return nil, apierr.New(apierr.InvalidArgument, "invalid_near_duplicates",
			"query parameter near_duplicates must be true or false, got %q", truncate(v, 64))
	}
	if !on {
		return nil, nil
	}
	t := h.cfg.Search.NearDuplicateThreshold
	return &t, nil
}

// duplicatesJSON renders an item's near-duplicates: absent when not asked,
// [] when none.
func duplicatesJSON(d []service.Duplicate, asked bool) *[]service.Duplicate {
	if !asked {
		return nil
	}
	if d == nil {
		d = []service.Duplicate{}
	}
	return &d
}

// similar answers GET /v1/images/{id}/similar: the images nearest to a
// stored one, with the search routes' k, num_candidates, min_score and
// filter in the query string.
func (h *handlers) similar(c *gin.Context) {
	start := time.Now()
	var p searchParams
	for name, vals := range c.Request.URL.Query() {
		switch name {
		case "k", "num_candidates", "min_score", "filter":
		default:
			abortWithError(c, apierr.New(apierr.InvalidArgument, "unknown_field",
				"unknown query parameter %q (want k, num_candidates, min_score, filter)", truncate(name, 64)))
			return
		}
		if err := p.setFormField(name, vals[0]); err != nil {
			abortWithError(c, err)
			return
		}
	}
	q, err := p.query(h.cfg.Search)
	if err != nil {
		abortWithError(c, err)
		return
	}
	hits, err := h.svc.Similar(c.Request.Context(), c.Param("id"), q)
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"hits": nonNil(hits), "took_ms": tookMS(start)})
}

type existsRequest struct {
	IDs []string `json:"ids"`
}

// exists answers POST /v1/images/_exists {"ids":[...]} with the ids that
// are indexed, so a loader can skip files whose content hash is known
// without uploading them.
func (h *handlers) exists(c *gin.Context) {
	// 1000 ids of at most 128 characters, JSON-quoted, plus slack.
	body, err := readLimited(c.Request.Body, esproxy.MaxExistsIDs*140+1024, "the request body", "request_too_large")
	if err != nil {
		abortWithError(c, err)
		return
	}
	var req existsRequest
	if err := decodeJSON(body, &req); err != nil {
		abortWithError(c, err)
		return
	}
	if len(req.IDs) == 0 || len(req.IDs) > esproxy.MaxExistsIDs {
		abortWithError(c, apierr.New(apierr.InvalidArgument, "invalid_ids", "ids must list 1..%d image ids, got %d", esproxy.MaxExistsIDs, len(req.IDs)))
		return
	}
	for _, id := range req.IDs {
		if err := checkID(id); err != nil {
			abortWithError(c, err)
			return
		}
	}
	found, err := h.svc.Exists(c.Request.Context(), req.IDs)
	if err != nil {
		abortWithError(c, err)
		return
	}
	if found == nil {
		found = []string{}
	}
	c.JSON(http.StatusOK, gin.H{"found": found})
}
