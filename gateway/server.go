// Package gateway is tusou's HTTP front: the Gin router, middleware (request
// ids, access logs, metrics, auth, limits, recovery), thin handlers that parse
// a request and call the service, and the one place errors become HTTP.
package gateway

import (
	"context"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/tusou/tusou/admission"
	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/service"
)

// Service is what the handlers need from the product logic.
type Service interface {
	Ingest(ctx context.Context, uploads []service.Upload, opts service.IngestOptions) ([]service.IngestItem, error)
	Get(ctx context.Context, id string) (*service.Image, error)
	Content(ctx context.Context, id string) (io.ReadSeekCloser, *service.Image, error)
	Delete(ctx context.Context, id, refresh string) error
	SearchImage(ctx context.Context, data []byte, q service.Query) ([]service.Hit, error)
	SearchText(ctx context.Context, text string, q service.Query) ([]service.Hit, error)
	Similar(ctx context.Context, id string, q service.Query) ([]service.Hit, error)
	Exists(ctx context.Context, ids []string) ([]string, error)
}

// Check is one readiness dependency (Elasticsearch, Triton).
type Check struct {
	Name  string
	Ready func(ctx context.Context) error
	// Replicas, when set, returns the state of each instance the gateway
	// balances over (address → state, e.g. "ready", "transient_failure");
	// /readyz shows it under replicas.<Name>. Ready alone decides readiness.
	Replicas func() map[string]string
}

// Deps are the gateway's collaborators.
type Deps struct {
	Config   *config.Config
	Service  Service
	Checks   []Check
	Logger   *zap.Logger
	Registry prometheus.Registerer
	Gatherer prometheus.Gatherer
	// Thumbnails makes image previews; nil answers 404 on the thumbnail route.
	Thumbnails Thumbnails
	// Budget bounds the request bytes held at once (server.memory_budget_bytes),
	// shared with the sidecar; nil: no bound.
	Budget *admission.Budget
	// Models manages the model generations (admin API); nil: no admin API.
	Models Models
}

// New returns the REST API handler.
func New(d Deps) http.Handler {
	gin.SetMode(gin.ReleaseMode)
	cfg := d.Config
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = true
	m := newHTTPMetrics(d.Registry)
	r.Use(requestID(), accessLog(d.Logger, m), recovery(d.Logger))
	r.NoRoute(func(c *gin.Context) {
		abortWithError(c, apierr.New(apierr.NotFound, "route_not_found", "no route for %s %s", c.Request.Method, c.Request.URL.Path))
	})
	r.NoMethod(func(c *gin.Context) {
		c.Status(http.StatusMethodNotAllowed)
		c.JSON(http.StatusMethodNotAllowed, errorBody{Error: errorDetail{Code: "method_not_allowed",
			Message: "method " + c.Request.Method + " is not allowed on " + c.Request.URL.Path}})
	})

	h := &handlers{cfg: cfg, svc: d.Service, checks: d.Checks, models: d.Models}
	r.GET("/healthz", h.healthz)
	r.GET("/readyz", h.readyz)
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(d.Gatherer, promhttp.HandlerOpts{})))
	r.GET("/openapi.json", serveOpenAPI)

	v1 := r.Group("/v1", deadline(cfg.Server.RequestTimeout), bodyLimit(cfg.Server.MaxBodyBytes),
		crossOrigin(cfg.Server.AllowedOrigins))
	if len(cfg.Auth.APIKeys) > 0 {
		v1.Use(apiKeyAuth(cfg.Auth.APIKeys))
	}
	v1.Use(pathID())
	v1.Use(memoryBudget(d.Budget)) // after auth: anonymous bodies take no budget
	v1.POST("/images", h.ingest)
	v1.GET("/images/:id", h.getImage)
	v1.GET("/images/:id/content", h.getContent)
	v1.GET("/images/:id/similar", h.similar)
	v1.POST("/images/_exists", h.exists)
	v1.DELETE("/images/:id", h.deleteImage)
	v1.POST("/search/image", h.searchImage)
	v1.POST("/search/text", h.searchText)
	registerUI(r, v1, d.Thumbnails)
	registerAdmin(r, h, cfg.Auth.AdminKeys, deadline(cfg.Server.RequestTimeout), crossOrigin(cfg.Server.AllowedOrigins))
	return r
}
