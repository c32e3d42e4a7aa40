// Package service is the product logic behind the native REST API: ingest
// images (hash, embed, store original, index), fetch and delete them, and
// search by image or text. It knows nothing about HTTP; handlers call it
// through a small interface of their own.
package service

import (
	"encoding/json"
	"time"
)

// Upload is one image to ingest.
type Upload struct {
	// Data is the image's bytes.
	Data []byte
	// ID is the client-chosen document id; empty means the SHA-256 of Data.
	ID string
	// Filename is the multipart file name, kept as metadata when present.
	Filename string
	// Metadata is an arbitrary JSON object stored with the image and usable in filters.
	Metadata map[string]any
}

// IngestOptions are the per-request ingest settings.
type IngestOptions struct {
	// Refresh says when Ingest returns, with Elasticsearch's meanings:
	// "wait_for" (or "": the configured default) once the documents are
	// searchable, "true" the same but refreshing at once, "false" as soon as
	// they are stored (searchable within the index refresh interval; for
	// bulk loaders).
	Refresh string
	// NearDuplicates, when set, is a cosine threshold: every created or
	// existing item then lists the other images at least that similar
	// (IngestItem.NearDuplicates).
	NearDuplicates *float32
}

// Result says what an ingest did with one image.
type Result string

// Ingest results.
const (
	// Created means a new document was indexed and is searchable.
	Created Result = "created"
	// Exists means a document with that id was already there; nothing was written.
	Exists Result = "exists"
)

// IngestItem is the outcome for one Upload, in request order.
type IngestItem struct {
	ID     string `json:"id,omitempty"`
	Result Result `json:"result,omitempty"`
	// Err is set when this item failed; other items are unaffected.
	Err error `json:"-"`
	// NearDuplicates are the other images whose cosine to this one reaches
	// IngestOptions.NearDuplicates, most similar first; nil when not asked,
	// empty when none.
	NearDuplicates []Duplicate `json:"near_duplicates,omitempty"`
}

// Duplicate is another image close to an ingested one.
type Duplicate struct {
	ID string `json:"id"`
	// Score is the cosine similarity between the two images, -1..1.
	Score float64 `json:"score"`
}

// Image is a stored image's public description (never its vector).
type Image struct {
	ID           string          `json:"id"`
	SHA256       string          `json:"sha256"`
	ContentType  string          `json:"content_type"`
	Width        int             `json:"width"`
	Height       int             `json:"height"`
	Bytes        int64           `json:"bytes"`
	Metadata     json.RawMessage `json:"metadata,omitempty"`
	Model        string          `json:"model"`
	ModelVersion string          `json:"model_version"`
	CreatedAt    time.Time       `json:"created_at"`
}

// Query holds the kNN parameters shared by image and text search.
type Query struct {
	K             int
	NumCandidates int
	// Filter restricts hits to images whose metadata has these values
	// (a value may be a list: any of them matches).
	Filter map[string]any
	// MinScore, when set, drops hits scoring below it.
	MinScore *float32
}

// Hit is one search result.
type Hit struct {
	ID string `json:"id"`
	// Score is the cosine similarity between the query and the image, -1..1.
	Score    float64         `json:"score"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}
