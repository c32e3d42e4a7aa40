package models

import "time"

// Status is what GET /v1/admin/models and `tusou models status` report.
type Status struct {
	// Alias is the alias of the active generation.
	Alias string `json:"alias"`
	// Active, Next and Previous name the generations behind the three
	// aliases (nil: none).
	Active   *string `json:"active"`
	Next     *string `json:"next"`
	Previous *string `json:"previous"`
	// Generations are the configured generations, then any index behind an
	// alias that is none of theirs (role "orphan").
	Generations []GenerationStatus `json:"generations"`
	// Switch is the switch this gateway runs or ran last; nil when none ran
	// here and none is pending.
	Switch *SwitchStatus `json:"switch"`
}

// ModelRef names a Triton model.
type ModelRef struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// GenerationStatus describes one generation.
type GenerationStatus struct {
	Name string `json:"name"`
	// Role is active, next, previous, unused or orphan.
	Role string `json:"role"`
	// Index is its concrete index; Documents its document count (-1 when
	// the index does not exist).
	Index      string   `json:"index"`
	Documents  int64    `json:"documents"`
	ImageModel ModelRef `json:"image_model"`
	TextModel  ModelRef `json:"text_model"`
	Dims       int      `json:"dims"`
	// Fingerprint is a short hash of the model's fingerprint vector.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Configured is false for an orphan.
	Configured bool `json:"configured"`
}

// Switch states.
const (
	StateCreating    = "creating"
	StatePropagating = "propagating"
	StateBackfilling = "backfilling"
	StateReconciling = "reconciling"
	StateVerifying   = "verifying"
	StateCuttingOver = "cutting_over"
	StateDone        = "done"
	StateFailed      = "failed"
	StateAborted     = "aborted"
	// StateInterrupted: <alias>-next exists but no switch runs in this
	// gateway (it was restarted, or another one runs it): rerun the switch.
	StateInterrupted = "interrupted"
)

// SwitchStatus is the progress of one switch.
type SwitchStatus struct {
	From    string `json:"from"`
	To      string `json:"to"`
	State   string `json:"state"`
	Running bool   `json:"running"`
	// Noop is true when the target was already active with nothing pending.
	Noop bool `json:"noop,omitempty"`
	// Total is the active generation's document count when the backfill
	// pass started; Scanned the ids it compared so far. Pass counts the
	// backfill+reconcile rounds (a second one checks the first changed
	// nothing; Scanned starts again from 0).
	Total   int64 `json:"total"`
	Scanned int64 `json:"scanned"`
	Pass    int   `json:"pass,omitempty"`
	// Created were re-embedded and written; Skipped were already there (an
	// earlier, interrupted run or a dual-write); Deleted were removed from
	// the target because they are gone from the active generation; Failed
	// could not be re-embedded; MissingOriginals have no stored original
	// (both as of the latest pass: each pass retries them).
	Created          int64      `json:"created"`
	Skipped          int64      `json:"skipped"`
	Deleted          int64      `json:"deleted"`
	Failed           int64      `json:"failed"`
	MissingOriginals int64      `json:"missing_originals"`
	DocsPerSecond    float64    `json:"docs_per_second"`
	StartedAt        time.Time  `json:"started_at,omitzero"`
	UpdatedAt        time.Time  `json:"updated_at,omitzero"`
	FinishedAt       *time.Time `json:"finished_at"`
	Error            *string    `json:"error"`
}
