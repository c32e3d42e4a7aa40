package client

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// Roles of a generation in ModelsStatus.
const (
	// RoleActive is the generation behind the alias: searched and written.
	RoleActive = "active"
	// RoleNext is the generation being filled by a switch (dual-written).
	RoleNext = "next"
	// RolePrevious is the generation that was active before the last switch,
	// kept for rollback until pruned.
	RolePrevious = "previous"
	// RoleUnused is a configured generation without an aliased index.
	RoleUnused = "unused"
	// RoleOrphan is an index with the provenance of a generation that the
	// gateway does not configure.
	RoleOrphan = "orphan"
)

// States of a switch in ModelSwitch.State.
const (
	SwitchCreating    = "creating"
	SwitchPropagating = "propagating"
	SwitchBackfilling = "backfilling"
	SwitchReconciling = "reconciling"
	SwitchVerifying   = "verifying"
	SwitchCuttingOver = "cutting_over"
	SwitchDone        = "done"
	SwitchFailed      = "failed"
	SwitchAborted     = "aborted"
	// SwitchInterrupted is reported by a gateway that sees the "<alias>-next"
	// alias but runs no switch job itself: the gateway that ran it restarted,
	// or (behind a load balancer) another replica runs it.
	SwitchInterrupted = "interrupted"
)

// ModelsStatus is the answer of GET /v1/admin/models: the alias, the
// generations and their roles, and the switch this gateway runs or ran last.
type ModelsStatus struct {
	// Alias is the Elasticsearch alias searches go to.
	Alias string `json:"alias"`
	// Active, Next and Previous name the generations behind "<alias>",
	// "<alias>-next" and "<alias>-previous"; empty when the alias is absent.
	Active   string `json:"active"`
	Next     string `json:"next,omitempty"`
	Previous string `json:"previous,omitempty"`
	// Generations are the configured generations and any orphan index.
	Generations []ModelGeneration `json:"generations"`
	// Switch is nil when no switch ran in the answering gateway and none is pending.
	Switch *ModelSwitch `json:"switch"`

	// Raw is the answer as the gateway sent it, so that `-o json` passes on
	// fields this client does not know.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes the status and keeps a copy of the bytes in Raw.
func (s *ModelsStatus) UnmarshalJSON(b []byte) error {
	type plain ModelsStatus // without this method, so no recursion
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*s = ModelsStatus(p)
	s.Raw = append(json.RawMessage(nil), b...)
	return nil
}

// Generation returns the generation called name, or nil.
func (s *ModelsStatus) Generation(name string) *ModelGeneration {
	for i := range s.Generations {
		if s.Generations[i].Name == name {
			return &s.Generations[i]
		}
	}
	return nil
}

// ModelGeneration is one embedding space: an image and a text encoder and
// the concrete index holding their vectors.
type ModelGeneration struct {
	Name string `json:"name"`
	// Role is RoleActive, RoleNext, RolePrevious, RoleUnused or RoleOrphan.
	Role string `json:"role"`
	// Index is the concrete Elasticsearch index (empty when it has none).
	Index string `json:"index,omitempty"`
	// Documents is the index's document count; -1 when the index does not exist.
	Documents  int64    `json:"documents"`
	ImageModel ModelRef `json:"image_model"`
	TextModel  ModelRef `json:"text_model"`
	Dims       int      `json:"dims,omitempty"`
	// Fingerprint identifies the encoders' weights (from the index provenance).
	Fingerprint string `json:"fingerprint,omitempty"`
	// Configured is false for an orphan.
	Configured bool `json:"configured"`
}

// ModelRef is a Triton model name and version.
type ModelRef struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// String is name@version.
func (m ModelRef) String() string {
	if m.Version == "" {
		return m.Name
	}
	return m.Name + "@" + m.Version
}

// ModelSwitch is the progress of a switch (or rollback) from one generation
// to another.
type ModelSwitch struct {
	From string `json:"from,omitempty"`
	To   string `json:"to"`
	// State is one of the Switch* constants.
	State string `json:"state"`
	// Running is true while the answering gateway runs the switch job.
	Running bool `json:"running"`
	// Noop is set when the target was already active: nothing was done.
	Noop bool `json:"noop,omitempty"`
	// Total is the document count of the source generation when the backfill
	// started; Scanned of them were compared so far.
	Total   int64 `json:"total"`
	Scanned int64 `json:"scanned"`
	// Created were embedded into the target; Skipped were already there (a
	// dual-write came first); Deleted were removed from the target because
	// the source no longer has them.
	Created int64 `json:"created"`
	Skipped int64 `json:"skipped"`
	Deleted int64 `json:"deleted"`
	// Failed documents could not be embedded; MissingOriginals had no
	// original in the blob store.
	Failed           int64   `json:"failed"`
	MissingOriginals int64   `json:"missing_originals"`
	DocsPerSecond    float64 `json:"docs_per_second"`
	// StartedAt identifies a switch run; zero in an "interrupted" report.
	StartedAt  time.Time `json:"started_at,omitzero"`
	UpdatedAt  time.Time `json:"updated_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// Error says why the switch failed or was aborted; empty otherwise.
	Error string `json:"error,omitempty"`
}

// Finished reports whether the state is final: done, failed or aborted.
func (s *ModelSwitch) Finished() bool {
	return s.State == SwitchDone || s.State == SwitchFailed || s.State == SwitchAborted
}

// PruneResult is the answer of a prune.
type PruneResult struct {
	// DeletedIndex is the concrete index that was deleted.
	DeletedIndex string `json:"deleted_index"`
	// Generation is the generation whose index it was.
	Generation string `json:"generation"`
}

// The admin API's paths.
const (
	adminModelsPath = "/v1/admin/models"
	adminSwitchPath = adminModelsPath + "/switch"
)

// ModelsStatus returns the generations and any switch (GET /v1/admin/models).
// Admin calls authenticate with WithAdminKey's key.
func (c *Client) ModelsStatus(ctx context.Context) (*ModelsStatus, error) {
	return c.models(ctx, request{method: http.MethodGet, path: adminModelsPath, admin: true})
}

// ModelsSwitch starts a switch to the generation to and returns the status
// with the switch running; when to is already active and no switch is
// pending, the status has Switch.State SwitchDone and Switch.Noop set.
// A switch runs in the gateway: follow it with ModelsStatus. Retried like a
// search: asking again for the same target is harmless.
func (c *Client) ModelsSwitch(ctx context.Context, to string) (*ModelsStatus, error) {
	body, err := json.Marshal(map[string]string{"to": to})
	if err != nil {
		return nil, err
	}
	return c.models(ctx, request{method: http.MethodPost, path: adminSwitchPath, body: body,
		contentType: "application/json", admin: true})
}

// ModelsRollback starts a switch back to the generation behind
// "<alias>-previous". Not retried once the request may have reached the
// gateway: a repeated rollback after a lost answer could switch twice.
func (c *Client) ModelsRollback(ctx context.Context) (*ModelsStatus, error) {
	return c.models(ctx, request{method: http.MethodPost, path: adminModelsPath + "/rollback",
		body: []byte("{}"), contentType: "application/json", admin: true, unsafe: true})
}

// ModelsPrune deletes the index of generation gen ("" for the previous
// generation). The gateway refuses the active and the next generation. Not
// retried once the request may have reached the gateway.
func (c *Client) ModelsPrune(ctx context.Context, gen string) (*PruneResult, error) {
	req := map[string]string{}
	if gen != "" {
		req["generation"] = gen
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var out PruneResult
	if err := c.do(ctx, request{method: http.MethodPost, path: adminModelsPath + "/prune", body: body,
		contentType: "application/json", admin: true, unsafe: true}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ModelsAbort stops the switch running in the gateway and removes
// "<alias>-next"; the target's index is kept, so a later switch resumes
// from it (DELETE /v1/admin/models/switch).
func (c *Client) ModelsAbort(ctx context.Context) (*ModelsStatus, error) {
	return c.models(ctx, request{method: http.MethodDelete, path: adminSwitchPath, admin: true})
}

func (c *Client) models(ctx context.Context, r request) (*ModelsStatus, error) {
	var out ModelsStatus
	if err := c.do(ctx, r, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
