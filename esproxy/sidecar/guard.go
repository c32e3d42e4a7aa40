package sidecar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// writeGuard decides which indices listener clients may change: those
// sidecar.write_indices matches, never the gateway's own alias and
// concrete indices (unless sidecar.write_gateway_index), and never through
// an expression whose indices cannot be known from the request (wildcards
// are judged by what they could match).
type writeGuard struct {
	writable []string // globs
	// gatewayGlobs are the gateway's alias and its concrete indices
	// (esproxy.ConcreteIndexName names them <alias>-<model>-...).
	gatewayGlobs []string
	// protected are the globs no write may reach: gatewayGlobs unless
	// write_gateway_index.
	protected []string
	gateway   string // the gateway's alias, for messages
}

func newWriteGuard(cfg Config, gatewayAlias string) writeGuard {
	g := writeGuard{writable: cfg.WriteIndices, gateway: gatewayAlias}
	if gatewayAlias != "" {
		g.gatewayGlobs = []string{gatewayAlias, gatewayAlias + "-*"}
	}
	if !cfg.WriteGatewayIndex {
		g.protected = g.gatewayGlobs
	}
	return g
}

// check returns nil when every index expr could name may be written, else
// a 403 naming the index and the setting. An empty expr is every index.
func (g writeGuard) check(op, expr string) *esError {
	if expr == "" {
		expr = "_all"
	}
	for _, part := range strings.Split(expr, ",") {
		if why := g.checkName(part); why != "" {
			return newESError(http.StatusForbidden, typeSecurity, fmt.Sprintf(
				"action [%s] on [%s] is not allowed through the tusou Elasticsearch sidecar: %s", op, part, why))
		}
	}
	return nil
}

// checkOne is check for operations that name exactly one index (document
// writes, bulk items, index creation): a wildcard, a list or _all there is
// refused outright rather than left to Elasticsearch.
func (g writeGuard) checkOne(op, name string) *esError {
	if name == "_all" || strings.ContainsAny(name, "*,") {
		return newESError(http.StatusForbidden, typeSecurity, fmt.Sprintf(
			"action [%s] on [%s] is not allowed through the tusou Elasticsearch sidecar: it writes one index, named without wildcards", op, name))
	}
	return g.check(op, name)
}

// checkName judges one part of an index expression; "" means allowed.
func (g writeGuard) checkName(part string) string {
	if strings.HasPrefix(part, "-") || strings.HasPrefix(part, "+") {
		return "index exclusions are not accepted in the target of a write"
	}
	if strings.ContainsAny(part, `\?`) {
		return "the index name contains a character a write target may not have"
	}
	pattern := part
	if part == "_all" {
		pattern = "*"
	} else if strings.HasPrefix(part, "<") && strings.HasSuffix(part, ">") {
		var ok bool
		if pattern, ok = dateMathGlob(part); !ok {
			return "the date math expression cannot be read"
		}
	}
	for _, p := range g.protected {
		if globsOverlap(pattern, p) {
			return fmt.Sprintf("it may name the gateway's own index [%s], which is read-only through the sidecar (sidecar.write_gateway_index)", g.gateway)
		}
	}
	for _, w := range g.writable {
		if globContains(w, pattern) {
			return ""
		}
	}
	return "the index is not in sidecar.write_indices"
}

// dateMathGlob turns <static{math{format|tz}}static> into a glob with a '*'
// for each date math part: the names the expression can resolve to.
func dateMathGlob(expr string) (string, bool) {
	inner := expr[1 : len(expr)-1]
	var b strings.Builder
	depth := 0
	for _, c := range inner {
		switch {
		case c == '{':
			if depth == 0 {
				b.WriteByte('*')
			}
			depth++
		case c == '}':
			depth--
			if depth < 0 {
				return "", false
			}
		case depth == 0:
			b.WriteRune(c)
		}
	}
	return b.String(), depth == 0
}

// globsOverlap reports whether some name matches both globs ('*' is any run).
func globsOverlap(a, b string) bool {
	memo := map[[2]int]bool{}
	var rec func(i, j int) bool
	rec = func(i, j int) bool {
		key := [2]int{i, j}
		if v, ok := memo[key]; ok {
			return v
		}
		var v bool
		switch {
		case i == len(a):
			v = strings.Trim(b[j:], "*") == ""
		case j == len(b):
			v = strings.Trim(a[i:], "*") == ""
		case a[i] == '*':
			v = rec(i+1, j) || rec(i, j+1)
		case b[j] == '*':
			v = rec(i, j+1) || rec(i+1, j)
		default:
			v = a[i] == b[j] && rec(i+1, j+1)
		}
		memo[key] = v
		return v
	}
	return rec(0, 0)
}

// globContains reports whether every name matching sub matches outer. It is
// exact for the globs write_indices holds in practice ("*", "prefix-*", a
// literal name) and errs towards "no" otherwise.
func globContains(outer, sub string) bool {
	if !strings.Contains(sub, "*") {
		return globMatch(outer, sub)
	}
	star := strings.IndexByte(outer, '*')
	if star < 0 {
		return outer == sub
	}
	if star == len(outer)-1 {
		return strings.HasPrefix(sub, outer[:star])
	}
	return outer == sub
}

// indexBodyKeys are the top-level members a create-index body may have;
// clone, shrink and split bodies take settings and aliases, rollover adds
// conditions.
var indexBodyKeys = map[string]bool{"settings": true, "mappings": true, "aliases": true, "conditions": true}

// checkIndexBody judges a create-index (clone, shrink, split, rollover)
// body: settings only from sidecar.create_index.settings, aliases only
// those sidecar.create_index.aliases names and never one that could be the
// gateway's alias.
func (s *Sidecar) checkIndexBody(op string, body []byte) *esError {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return newESError(http.StatusBadRequest, typeParsing, "failed to parse the "+op+" body: "+err.Error())
	}
	refuse := func(format string, args ...any) *esError {
		return newESError(http.StatusForbidden, typeSecurity, fmt.Sprintf("action [%s] is not allowed through the tusou Elasticsearch sidecar: ", op)+fmt.Sprintf(format, args...))
	}
	for k := range top {
		if !indexBodyKeys[k] {
			return refuse("the body member [%s] is not accepted", k)
		}
	}
	if raw, ok := top["settings"]; ok {
		var settings map[string]any
		if err := json.Unmarshal(raw, &settings); err != nil {
			return newESError(http.StatusBadRequest, typeParsing, "[settings] must be an object: "+err.Error())
		}
		var bad string
		flattenSettings("", settings, func(key string) {
			name := strings.TrimPrefix(key, "index.")
			for _, g := range s.cfg.CreateIndex.Settings {
				if globMatch(g, name) {
					return
				}
			}
			if bad == "" || key < bad {
				bad = key
			}
		})
		if bad != "" {
			return refuse("the index setting [%s] is not in sidecar.create_index.settings", bad)
		}
	}
	if raw, ok := top["aliases"]; ok {
		var aliases map[string]json.RawMessage
		if err := json.Unmarshal(raw, &aliases); err != nil {
			return newESError(http.StatusBadRequest, typeParsing, "[aliases] must be an object: "+err.Error())
		}
		for name := range aliases {
			if e := s.checkAlias(op, name); e != nil {
				return e
			}
		}
	}
	return nil
}

// checkAlias refuses an alias name a client may not attach an index to:
// one that could be the gateway's alias or its concrete indices' names
// (always, whatever write_gateway_index says: an index attached there
// would be served by the gateway), or one create_index.aliases does not name.
func (s *Sidecar) checkAlias(op, name string) *esError {
	g := aliasGlob(name)
	for _, p := range s.guard.gatewayGlobs {
		if globsOverlap(g, p) {
			return newESError(http.StatusForbidden, typeSecurity, fmt.Sprintf(
				"action [%s] is not allowed through the tusou Elasticsearch sidecar: the alias [%s] may name the gateway's own index [%s]", op, name, s.guard.gateway))
		}
	}
	for _, a := range s.cfg.CreateIndex.Aliases {
		if globContains(a, g) {
			return nil
		}
	}
	return newESError(http.StatusForbidden, typeSecurity, fmt.Sprintf(
		"action [%s] is not allowed through the tusou Elasticsearch sidecar: the alias [%s] is not in sidecar.create_index.aliases", op, name))
}

// aliasGlob is the glob of names an alias expression can stand for.
func aliasGlob(name string) string {
	if strings.HasPrefix(name, "<") && strings.HasSuffix(name, ">") {
		if g, ok := dateMathGlob(name); ok {
			return g
		}
		return "*"
	}
	return name
}

// flattenSettings calls fn with the dotted key of every leaf of a settings
// object ({"index":{"number_of_shards":1}} and "index.number_of_shards"
// are the same setting to Elasticsearch).
func flattenSettings(prefix string, m map[string]any, fn func(key string)) {
	for k, v := range m {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
			flattenSettings(key, sub, fn)
			continue
		}
		fn(key)
	}
}

// checkAliasActions judges POST /_aliases: every index and alias an action
// names is a write target, and added aliases follow create_index.aliases.
func (s *Sidecar) checkAliasActions(body []byte) *esError {
	const op = "indices.update_aliases"
	var req struct {
		Actions []map[string]struct {
			Index   string   `json:"index"`
			Indices []string `json:"indices"`
			Alias   string   `json:"alias"`
			Aliases []string `json:"aliases"`
		} `json:"actions"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return newESError(http.StatusBadRequest, typeParsing, "failed to parse the aliases body: "+err.Error())
	}
	for _, a := range req.Actions {
		for kind, act := range a {
			for _, idx := range append(act.Indices, act.Index) {
				if idx == "" {
					continue
				}
				if e := s.guard.check(op, idx); e != nil {
					return e
				}
			}
			for _, al := range append(act.Aliases, act.Alias) {
				if al == "" {
					continue
				}
				if e := s.guard.check(op, al); e != nil {
					return e
				}
				if kind == "add" {
					if e := s.checkAlias(op, al); e != nil {
						return e
					}
				}
			}
		}
	}
	return nil
}

// checkReindex judges POST /_reindex (refused unless allowed): its
// destination is a write target like any other.
func (s *Sidecar) checkReindex(body []byte) *esError {
	var req struct {
		Dest struct {
			Index string `json:"index"`
		} `json:"dest"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return newESError(http.StatusBadRequest, typeParsing, "failed to parse the reindex body: "+err.Error())
	}
	return s.guard.checkOne("reindex", req.Dest.Index)
}
