package sidecar

import (
	"net/http"
	"net/url"
	"strings"
)

// handling says what the sidecar does with a request besides the allow check.
type handling int

const (
	// passThrough streams the request and the answer unchanged.
	passThrough handling = iota
	// rootInfo answers GET / and HEAD / itself.
	rootInfo
	// bulkWrite enriches the documents of a _bulk body.
	bulkWrite
	// docWrite enriches one document (index or create).
	docWrite
	// docUpdate enriches the partial document of an _update.
	docUpdate
	// searchOne computes query_vector_builders of one search body.
	searchOne
	// searchMulti computes query_vector_builders of an _msearch body.
	searchMulti
)

// route is a classified request.
type route struct {
	// Op names the operation, as the allow list does.
	Op string
	// Index is the index expression of the path ("" for cluster-level calls).
	Index string
	// How says which handler runs.
	How handling
}

// Operation names let through by default: document reads and writes,
// searches and what clients need to run them (scroll, point in time,
// refresh, mapping reads), index create/exists/get and cluster health.
// Everything else is refused unless Config.Allow names it.
var defaultAllowed = []string{
	"info", "index", "create", "update", "get", "delete", "bulk", "mget",
	"search", "msearch", "count", "scroll", "clear_scroll", "pit",
	"refresh", "get_mapping", "field_caps",
	"indices.create", "indices.exists", "indices.get", "cluster.health",
}

// namedOps are the operation names classify produces literally, plus the
// common API namespaces; metrics label other names "other" so that clients
// inventing paths cannot grow the label set without bound.
var namedOps = []string{
	"indices.delete", "search_template", "indices.put_mapping", "indices.get_settings", "indices.put_settings",
	"indices.get_alias", "indices.update_aliases", "cluster.get_settings", "cluster.put_settings", "cluster",
	"nodes.shutdown", "nodes", "delete_by_query", "update_by_query", "explain", "termvectors", "mtermvectors",
	"validate_query", "indices.close", "indices.open", "indices.forcemerge", "indices.flush", "indices.stats",
	"indices.clone", "indices.shrink", "indices.split", "indices.rollover", "indices.analyze", "reindex",
	"snapshot", "slm", "security", "ilm", "ingest", "cat", "tasks", "license", "ml", "transform", "watcher",
	"index_template", "component_template", "template", "data_stream", "analyze", "stats", "flush", "forcemerge",
	"scripts", "sql", "esql", "eql", "async_search", "inference", "enrich", "ccr", "features", "other",
}

// classify names the operation of a request. The names follow
// Elasticsearch's API names where there is one (indices.delete,
// cluster.put_settings, delete_by_query); other namespaces are named after
// their path segment (_snapshot/... is snapshot, _cat/... is cat,
// _security/... is security), and unknown index-level APIs are indices.<api>
// (/{index}/_forcemerge is indices.forcemerge). "other" is a method an API
// does not have.
func classify(method, rawPath string) route {
	segs := splitPath(rawPath)
	get := method == http.MethodGet || method == http.MethodHead
	read := method == http.MethodGet || method == http.MethodPost
	write := method == http.MethodPut || method == http.MethodPost
	pick := func(ok bool, op string, how handling) route {
		if !ok {
			return route{Op: "other"}
		}
		return route{Op: op, How: how}
	}
	if len(segs) == 0 {
		if get {
			return route{Op: "info", How: rootInfo}
		}
		// DELETE / deletes every index.
		return route{Op: "indices.delete"}
	}
	if strings.HasPrefix(segs[0], "_") {
		second := ""
		if len(segs) > 1 {
			second = segs[1]
		}
		switch segs[0] {
		case "_bulk":
			return pick(write, "bulk", bulkWrite)
		case "_mget":
			return pick(read, "mget", passThrough)
		case "_search":
			switch {
			case second == "scroll" && method == http.MethodDelete:
				return route{Op: "clear_scroll"}
			case second == "scroll":
				return pick(read, "scroll", passThrough)
			case second == "template":
				return route{Op: "search_template"}
			case len(segs) > 1:
				return route{Op: "other"}
			}
			return pick(read, "search", searchOne)
		case "_msearch":
			if second == "template" {
				return route{Op: "search_template"}
			}
			return pick(read, "msearch", searchMulti)
		case "_count":
			return pick(read, "count", passThrough)
		case "_pit":
			return pick(method == http.MethodDelete, "pit", passThrough)
		case "_refresh":
			return pick(read, "refresh", passThrough)
		case "_mapping", "_mappings":
			if get {
				return route{Op: "get_mapping"}
			}
			return route{Op: "indices.put_mapping"}
		case "_field_caps":
			return pick(read, "field_caps", passThrough)
		case "_settings":
			if get {
				return route{Op: "indices.get_settings"}
			}
			return route{Op: "indices.put_settings"}
		case "_alias", "_aliases":
			if get {
				return route{Op: "indices.get_alias"}
			}
			return route{Op: "indices.update_aliases"}
		case "_cluster":
			switch {
			case second == "health" && get:
				return route{Op: "cluster.health"}
			case second == "settings" && get:
				return route{Op: "cluster.get_settings"}
			case second == "settings":
				return route{Op: "cluster.put_settings"}
			}
			return route{Op: "cluster"}
		case "_nodes":
			for _, s := range segs[1:] {
				if s == "shutdown" || s == "_shutdown" {
					return route{Op: "nodes.shutdown"}
				}
			}
			return route{Op: "nodes"}
		}
		// _reindex, _snapshot, _security, _ilm, _ingest, _cat, _tasks, ...
		return route{Op: strings.TrimPrefix(segs[0], "_")}
	}

	index := segs[0]
	rt := func(r route) route { r.Index = index; return r }
	if len(segs) == 1 {
		switch method {
		case http.MethodPut:
			return rt(route{Op: "indices.create"})
		case http.MethodHead:
			return rt(route{Op: "indices.exists"})
		case http.MethodGet:
			return rt(route{Op: "indices.get"})
		case http.MethodDelete:
			return rt(route{Op: "indices.delete"})
		}
		return rt(route{Op: "other"})
	}
	api := segs[1]
	n := len(segs)
	switch api {
	case "_doc":
		switch {
		case n == 2 && method == http.MethodPost:
			return rt(route{Op: "index", How: docWrite})
		case n == 3 && write:
			return rt(route{Op: "index", How: docWrite})
		case n == 3 && get:
			return rt(route{Op: "get"})
		case n == 3 && method == http.MethodDelete:
			return rt(route{Op: "delete"})
		}
		return rt(route{Op: "other"})
	case "_create":
		return rt(pick(n == 3 && write, "create", docWrite))
	case "_update":
		return rt(pick(n == 3 && method == http.MethodPost, "update", docUpdate))
	case "_source":
		return rt(pick(n == 3 && get, "get", passThrough))
	case "_bulk":
		return rt(pick(n == 2 && write, "bulk", bulkWrite))
	case "_mget":
		return rt(pick(read, "mget", passThrough))
	case "_search":
		if n > 2 && segs[2] == "template" {
			return rt(route{Op: "search_template"})
		}
		return rt(pick(n == 2 && read, "search", searchOne))
	case "_msearch":
		if n > 2 && segs[2] == "template" {
			return rt(route{Op: "search_template"})
		}
		return rt(pick(n == 2 && read, "msearch", searchMulti))
	case "_count":
		return rt(pick(read, "count", passThrough))
	case "_pit":
		return rt(pick(method == http.MethodPost, "pit", passThrough))
	case "_refresh":
		return rt(pick(read, "refresh", passThrough))
	case "_mapping", "_mappings":
		if get {
			return rt(route{Op: "get_mapping"})
		}
		return rt(route{Op: "indices.put_mapping"})
	case "_field_caps":
		return rt(pick(read, "field_caps", passThrough))
	case "_settings":
		if get {
			return rt(route{Op: "indices.get_settings"})
		}
		return rt(route{Op: "indices.put_settings"})
	case "_alias", "_aliases":
		if get {
			return rt(route{Op: "indices.get_alias"})
		}
		return rt(route{Op: "indices.update_aliases"})
	case "_delete_by_query", "_update_by_query", "_explain", "_termvectors", "_mtermvectors":
		return rt(route{Op: strings.TrimPrefix(api, "_")})
	case "_validate":
		return rt(route{Op: "validate_query"})
	}
	if strings.HasPrefix(api, "_") {
		// _close, _open, _forcemerge, _flush, _stats, _clone, _shrink, ...
		return rt(route{Op: "indices." + strings.TrimPrefix(api, "_")})
	}
	return rt(route{Op: "other"})
}

// splitPath splits an escaped URL path into unescaped segments, dropping
// empty ones (Elasticsearch ignores doubled and trailing slashes).
func splitPath(p string) []string {
	var out []string
	for _, s := range strings.Split(p, "/") {
		if s == "" {
			continue
		}
		if u, err := url.PathUnescape(s); err == nil {
			s = u
		}
		out = append(out, s)
	}
	return out
}

// allowSet answers whether an operation may pass.
type allowSet struct {
	all bool
	ops map[string]bool
}

func newAllowSet(extra []string) allowSet {
	a := allowSet{ops: map[string]bool{}}
	for _, op := range defaultAllowed {
		a.ops[op] = true
	}
	for _, op := range extra {
		if op == "*" {
			a.all = true
		}
		a.ops[op] = true
	}
	return a
}

func (a allowSet) allowed(op string) bool { return a.all || a.ops[op] }

// labelSet is the bounded set of operation names used as metric labels.
type labelSet map[string]bool

func newLabelSet(allow []string) labelSet {
	l := labelSet{}
	for _, list := range [][]string{defaultAllowed, namedOps, allow} {
		for _, op := range list {
			l[op] = true
		}
	}
	return l
}

func (l labelSet) label(op string) string {
	if l[op] {
		return op
	}
	return "other"
}
