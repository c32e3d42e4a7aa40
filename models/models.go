// Package models holds tusou's model generations and switches between them.
//
// A generation is one embedding space: an image encoder and a text encoder
// trained together, and the concrete Elasticsearch index that holds their
// vectors. Which generation is active lives in Elasticsearch, as aliases
// every gateway polls (one atomic POST /_aliases moves them all):
//
//	<alias>           the active generation's index: searched and written
//	<alias>-next      the index a switch is filling: written too (dual-write)
//	<alias>-previous  the index active before the last switch (rollback)
//
// The Catalog is a gateway's view of those aliases; the Switcher fills a
// generation from the stored originals and moves the aliases.
package models

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/preprocess"
)

// ImageEmbedder turns image bytes into a unit vector (embed.Images).
type ImageEmbedder interface {
	Embed(ctx context.Context, data []byte) ([]float32, preprocess.Info, error)
}

// TextEmbedder turns text into a unit vector (embed.Texts).
type TextEmbedder interface {
	Embed(ctx context.Context, text string) ([]float32, error)
}

// Generation is one configured generation with its encoders. Its index
// name is fixed by its provenance; the index exists once the generation was
// made active or a switch to it started.
type Generation struct {
	// Name is the configured name (models.generations[].name).
	Name string
	// Images and Texts are the generation's encoders.
	Images ImageEmbedder
	Texts  TextEmbedder
	// Prov is the provenance its index carries (fingerprint included).
	Prov esproxy.Provenance
	// index is its concrete index: esproxy.ConcreteIndexName, or the name
	// of an index made before generations had names that holds its vectors.
	index atomic.Pointer[string]
	// store is the client pinned to the index, set by Catalog.Open.
	store atomic.Pointer[esproxy.Client]
	// inUse is when this gateway last saw the generation written to
	// (active or next), in Unix nanoseconds.
	inUse atomic.Int64
}

// LastInUse is when this gateway last saw the generation active or being
// filled (its start, for a generation not seen since): other gateways may
// write to it until they have re-read the aliases.
func (g *Generation) LastInUse() time.Time { return time.Unix(0, g.inUse.Load()) }

// NewGeneration returns a generation whose index belongs to alias.
func NewGeneration(name string, images ImageEmbedder, texts TextEmbedder, prov esproxy.Provenance, alias string) *Generation {
	g := &Generation{Name: name, Images: images, Texts: texts, Prov: prov}
	g.inUse.Store(time.Now().UnixNano())
	idx := esproxy.ConcreteIndexName(alias, prov)
	g.index.Store(&idx)
	return g
}

// Index is the generation's concrete index name.
func (g *Generation) Index() string { return *g.index.Load() }

// Store is the client pinned to the generation's index, nil until the
// catalog has opened it (the index exists).
func (g *Generation) Store() *esproxy.Client { return g.store.Load() }

// Role is a generation's part in the current state.
type Role string

// Roles, as Status reports them.
const (
	RoleActive   Role = "active"
	RoleNext     Role = "next"
	RolePrevious Role = "previous"
	// RoleUnused: configured, but behind none of the aliases.
	RoleUnused Role = "unused"
)

// Alias suffixes of the switch state.
const (
	NextSuffix     = "-next"
	PreviousSuffix = "-previous"
)
