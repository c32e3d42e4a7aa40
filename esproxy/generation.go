package esproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"
	"go.uber.org/zap"

	"github.com/tusou/tusou/apierr"
)

// GenerationIndex describes the concrete index of one model generation.
type GenerationIndex struct {
	// Name is the concrete index (ConcreteIndexName of the alias and the
	// generation's provenance).
	Name string
	// Created is true when this call created it.
	Created bool
	// Quantized says whether it stores quantised vectors.
	Quantized bool
}

// EnsureGeneration makes the concrete index name (empty:
// ConcreteIndexName of the alias and p) for provenance p exist and
// checks it holds p's vectors (a Conflict naming the difference
// otherwise). withAlias creates it already carrying the alias as its write
// index, atomically: for the first generation of a new alias, so there is
// never an alias without an index or the reverse. Safe to call from several
// gateways at once.
func (c *Client) EnsureGeneration(ctx context.Context, p Provenance, name string, withAlias bool) (gi GenerationIndex, err error) {
	defer c.observe("ensure_index", time.Now(), &err)
	if p.Model == "" || p.Dims < 1 {
		return gi, apierr.New(apierr.Internal, CodeIndexMismatch, "esproxy: provenance needs a model and dims, got %s", p)
	}
	ctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	gi.Name = name
	if gi.Name == "" {
		gi.Name = ConcreteIndexName(c.cfg.Index, p)
	}
	for attempt := 0; attempt < 2; attempt++ {
		ix, err := c.getConcrete(ctx, gi.Name)
		if err != nil {
			return gi, err
		}
		if ix != nil {
			problems, quantized := c.indexProblems(gi.Name, *ix, p)
			if len(problems) > 0 {
				return gi, apierr.New(apierr.Conflict, CodeIndexMismatch, "refusing elasticsearch index for %s: %s", p, strings.Join(problems, "; "))
			}
			gi.Quantized = quantized
			return gi, nil
		}
		created, err := c.createIndex(ctx, gi.Name, p, withAlias)
		if err != nil {
			return gi, err
		}
		if created {
			c.log.Info("elasticsearch generation index created", zap.String("index", gi.Name), zap.Bool("alias", withAlias), zap.Stringer("provenance", p))
			gi.Created, gi.Quantized = true, Quantized(c.cfg.IndexOptions.Type)
			return gi, nil
		}
		// Created by another gateway between our GET and PUT: check it.
	}
	return gi, apierr.New(apierr.Unavailable, CodeUnavailable, "elasticsearch index %q appeared and vanished while being created", gi.Name).
		WithRetryAfter(unavailableRetryAfter)
}

// getConcrete returns one concrete index's aliases and mapping, nil when it
// does not exist. A name that is an alias is refused.
func (c *Client) getConcrete(ctx context.Context, name string) (*existingIndex, error) {
	out, err := c.getIndices(ctx, name)
	if err != nil || out == nil {
		return nil, err
	}
	ix, ok := out[name]
	if !ok {
		return nil, apierr.New(apierr.Conflict, CodeIndexMismatch, "%q is an alias, not the concrete index of a generation", name)
	}
	return &ix, nil
}

// AliasTargets returns, for each of the given alias names that exists, the
// concrete indices it points at. One request; missing aliases are absent.
func (c *Client) AliasTargets(ctx context.Context, names ...string) (targets map[string][]string, err error) {
	defer c.observe("get_alias", time.Now(), &err)
	ctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	res, err := c.perform(ctx, "get alias", esapi.IndicesGetAliasRequest{Name: names}, 404)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	// A 404 names the missing aliases but still lists the indices of those
	// that exist, beside "error" and "status" keys.
	var out map[string]json.RawMessage
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return nil, apierr.Wrap(err, apierr.BadGateway, CodeBadGateway, "elasticsearch get alias: unreadable answer")
	}
	targets = map[string][]string{}
	for index, raw := range out {
		if index == "error" || index == "status" {
			continue
		}
		var ix struct {
			Aliases map[string]json.RawMessage `json:"aliases"`
		}
		if err := json.Unmarshal(raw, &ix); err != nil {
			return nil, apierr.Wrap(err, apierr.BadGateway, CodeBadGateway, "elasticsearch get alias: unreadable answer")
		}
		for a := range ix.Aliases {
			targets[a] = append(targets[a], index)
		}
	}
	return targets, nil
}

// IndexProvenance reads the provenance stored in a concrete index's mapping.
// found is false when the index does not exist; an index without tusou
// provenance is a Conflict.
func (c *Client) IndexProvenance(ctx context.Context, index string) (p Provenance, found bool, err error) {
	defer c.observe("get_index", time.Now(), &err)
	ctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	ix, err := c.getConcrete(ctx, index)
	if err != nil || ix == nil {
		return p, false, err
	}
	raw, ok := ix.Mappings.Meta[metaKey]
	if !ok || json.Unmarshal(raw, &p) != nil {
		return p, true, apierr.New(apierr.Conflict, CodeIndexMismatch, "index %q has no tusou provenance in its mapping _meta", index)
	}
	return p, true, nil
}

// AliasAction is one step of an atomic POST /_aliases.
type AliasAction struct {
	// Op is "add" or "remove".
	Op    string
	Index string
	Alias string
	// WriteIndex marks an added alias as the index's write index.
	WriteIndex bool
	// MustExist makes a remove fail when the alias is not on the index, so a
	// cut-over computed from a stale view fails as a whole.
	MustExist bool
}

// UpdateAliases applies actions atomically: all or none.
func (c *Client) UpdateAliases(ctx context.Context, actions []AliasAction) (err error) {
	defer c.observe("update_aliases", time.Now(), &err)
	list := make([]map[string]any, 0, len(actions))
	for _, a := range actions {
		body := map[string]any{"index": a.Index, "alias": a.Alias}
		switch a.Op {
		case "add":
			if a.WriteIndex {
				body["is_write_index"] = true
			}
		case "remove":
			if a.MustExist {
				body["must_exist"] = true
			}
		default:
			return apierr.New(apierr.Internal, "internal", "esproxy: alias action %q", a.Op)
		}
		list = append(list, map[string]any{a.Op: body})
	}
	b, err := json.Marshal(map[string]any{"actions": list})
	if err != nil {
		return apierr.Wrap(err, apierr.Internal, "internal", "esproxy: alias actions")
	}
	ctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	res, err := c.perform(ctx, "update aliases", esapi.IndicesUpdateAliasesRequest{Body: strings.NewReader(string(b))})
	if err != nil {
		return err
	}
	readBody(res.Body, 64<<10)
	res.Body.Close()
	return nil
}

// DeleteConcrete deletes a concrete index (never an alias or a pattern).
func (c *Client) DeleteConcrete(ctx context.Context, index string) (err error) {
	defer c.observe("delete_index", time.Now(), &err)
	if index == "" || strings.ContainsAny(index, "*,?") {
		return apierr.New(apierr.Internal, "internal", "esproxy: refusing to delete index %q", index)
	}
	ctx, cancel := c.opContext(ctx, c.cfg.RequestTimeout)
	defer cancel()
	res, err := c.perform(ctx, "delete index", esapi.IndicesDeleteRequest{Index: []string{index}}, 404)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode == 404 {
		return apierr.New(apierr.NotFound, "index_not_found", "elasticsearch index %q does not exist", index)
	}
	readBody(res.Body, 64<<10)
	return nil
}

// String names a generation index for logs.
func (g GenerationIndex) String() string { return fmt.Sprintf("%s (created %t)", g.Name, g.Created) }
