package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/models"
)

// Models is what the admin API needs from the model generations
// (models.Switcher).
type Models interface {
	Status(ctx context.Context) (*models.Status, error)
	// Switch starts filling generation to and moving the alias to it;
	// started is false when it was already running or had nothing to do.
	Switch(ctx context.Context, to string) (st *models.SwitchStatus, started bool, err error)
	// Rollback switches back to the previous generation.
	Rollback(ctx context.Context) (st *models.SwitchStatus, started bool, err error)
	// Prune deletes a generation's index (default: the previous one).
	Prune(ctx context.Context, generation string) (models.PruneResult, error)
	// Abort stops a running switch and stops the dual-write.
	Abort(ctx context.Context) (*models.Status, error)
}

// adminBodyLimit bounds admin request bodies ({"to":"b"}).
const adminBodyLimit = 4 << 10

// registerAdmin mounts /v1/admin, authenticated with auth.admin_keys (never
// with the apps' api_keys); with no admin key configured it answers 403.
func registerAdmin(r *gin.Engine, h *handlers, keys []string, mw ...gin.HandlerFunc) {
	g := r.Group("/v1/admin", mw...)
	if len(keys) == 0 {
		g.Use(func(c *gin.Context) {
			abortWithError(c, apierr.New(apierr.Forbidden, "admin_disabled",
				"the admin API is off: set auth.admin_keys (TUSOU_AUTH_ADMIN_KEYS) to use it"))
		})
	} else {
		g.Use(keyAuth(keys, "a valid admin key is required (Authorization: ApiKey <one of auth.admin_keys>)"))
	}
	g.GET("/models", h.modelsStatus)
	g.POST("/models/switch", h.modelsSwitch)
	g.DELETE("/models/switch", h.modelsAbort)
	g.POST("/models/rollback", h.modelsRollback)
	g.POST("/models/prune", h.modelsPrune)
}

func (h *handlers) modelsStatus(c *gin.Context) {
	if h.models == nil {
		abortWithError(c, errNoModels)
		return
	}
	st, err := h.models.Status(c.Request.Context())
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

// errNoModels: the gateway was built without a switcher (tests, tools).
var errNoModels = apierr.New(apierr.NotFound, "route_not_found", "this gateway has no model generations to manage")

func (h *handlers) modelsSwitch(c *gin.Context) {
	var req struct {
		To string `json:"to"`
	}
	if err := decodeAdminBody(c, &req); err != nil {
		abortWithError(c, err)
		return
	}
	if req.To == "" {
		abortWithError(c, apierr.New(apierr.InvalidArgument, "invalid_request", `"to" (the generation to switch to) is required`))
		return
	}
	h.startSwitch(c, func(ctx context.Context) (*models.SwitchStatus, bool, error) { return h.models.Switch(ctx, req.To) })
}

func (h *handlers) modelsRollback(c *gin.Context) {
	if h.models == nil {
		abortWithError(c, errNoModels)
		return
	}
	var req struct{}
	if err := decodeAdminBody(c, &req); err != nil {
		abortWithError(c, err)
		return
	}
	h.startSwitch(c, h.models.Rollback)
}

// startSwitch answers 202 with the status when a switch runs, 200 when
// there was nothing to do.
func (h *handlers) startSwitch(c *gin.Context, start func(context.Context) (*models.SwitchStatus, bool, error)) {
	if h.models == nil {
		abortWithError(c, errNoModels)
		return
	}
	// The switch outlives this request: it runs in the switcher's own job.
	sw, _, err := start(c.Request.Context())
	if err != nil {
		abortWithError(c, err)
		return
	}
	st, err := h.models.Status(c.Request.Context())
	if err != nil {
		abortWithError(c, err)
		return
	}
	if sw != nil {
		st.Switch = sw
	}
	code := http.StatusAccepted
	if st.Switch != nil && !st.Switch.Running {
		code = http.StatusOK
	}
	c.JSON(code, st)
}

func (h *handlers) modelsAbort(c *gin.Context) {
	if h.models == nil {
		abortWithError(c, errNoModels)
		return
	}
	st, err := h.models.Abort(c.Request.Context())
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

func (h *handlers) modelsPrune(c *gin.Context) {
	if h.models == nil {
		abortWithError(c, errNoModels)
		return
	}
	var req struct {
		Generation string `json:"generation"`
	}
	if err := decodeAdminBody(c, &req); err != nil {
		abortWithError(c, err)
		return
	}
	res, err := h.models.Prune(c.Request.Context(), req.Generation)
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(http.StatusOK, res)
}

// decodeAdminBody reads an optional small JSON object strictly; an empty
// body is an empty object.
func decodeAdminBody(c *gin.Context, v any) error {
	body, err := io.ReadAll(io.LimitReader(c.Request.Body, adminBodyLimit+1))
	if err != nil {
		return apierr.Wrap(err, apierr.InvalidArgument, "invalid_request", "could not read the request body")
	}
	if len(body) > adminBodyLimit {
		return apierr.New(apierr.TooLarge, "body_too_large", "admin request bodies are at most %d bytes", adminBodyLimit)
	}
	if len(body) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) {
			return apierr.New(apierr.InvalidArgument, "invalid_json", "the body is not valid JSON: %v", err)
		}
		return apierr.New(apierr.InvalidArgument, "invalid_request", "%v", err)
	}
	return nil
}
