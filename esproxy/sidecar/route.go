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
	// indexBody checks a create-index (clone, shrink, split, rollover) body.
	indexBody
	// aliasActions checks the actions of POST /_aliases.
	aliasActions
	// reindexBody checks the destination of POST /_reindex.
	reindexBody
)

// route is a classified request.
type route struct {
	// Op names the operation, as the allow list does; "other" for a
	// method and path the route table does not name.
	Op string
	// Index is the decoded index expression of the path ("" for
	// cluster-level calls).
	Index string
	// Target is a second index the operation writes (clone, shrink and
	// split targets, rollover's new index) or the alias of an alias call.
	Target string
	// How says which handler runs.
	How handling
	// Write says the operation changes the indices Index names (and
	// Target); the write rules (sidecar.write_indices, the gateway's own
	// index) apply to them. Bulk items are checked one by one instead.
	Write bool
	// Refusal, when set, says why a request is refused whatever the allow
	// list says (a path Elasticsearch could route differently).
	Refusal string
}

// spec is one row of the route table: the methods, the exact path shape
// and the operation it is. Path segments are literals, which must equal
// the raw (still escaped) segment the client sent, as Elasticsearch's
// router compares them, or placeholders:
//
//	{index}  an index expression (commas, wildcards, _all, date math)
//	{target} an index name the operation creates or writes
//	{id}     a document id, alias, setting, field or node name
//	{opaque} a scroll id: anything but empty
//	{rest}   one or more further segments (API namespaces the sidecar does
//	         not look into; all of them refused by default)
//
// A placeholder never stands for a value that starts with '_' (except the
// index expression _all): an Elasticsearch API name where a placeholder is
// expected is exactly how a path gets routed elsewhere (typed v7 routes
// such as /{index}/{type}/_mapping), so such paths match no row.
type spec struct {
	methods string
	path    string
	op      string
	how     handling
	write   bool
}

// routeTable lists every request shape the sidecar knows. A request that
// matches no row is refused, whatever sidecar.allow says. Order matters
// only between rows that can match the same path (literal rows come first).
var routeTable = []spec{
	{"GET HEAD", "/", "info", rootInfo, false},

	// Documents.
	{"POST", "/{index}/_doc", "index", docWrite, true},
	{"PUT POST", "/{index}/_doc/{id}", "index", docWrite, true},
	{"GET HEAD", "/{index}/_doc/{id}", "get", passThrough, false},
	{"DELETE", "/{index}/_doc/{id}", "delete", passThrough, true},
	{"PUT POST", "/{index}/_create/{id}", "create", docWrite, true},
	{"POST", "/{index}/_update/{id}", "update", docUpdate, true},
	{"GET HEAD", "/{index}/_source/{id}", "get", passThrough, false},
	{"PUT POST", "/_bulk", "bulk", bulkWrite, false},
	{"PUT POST", "/{index}/_bulk", "bulk", bulkWrite, false},
	{"GET POST", "/_mget", "mget", passThrough, false},
	{"GET POST", "/{index}/_mget", "mget", passThrough, false},
	{"GET POST", "/{index}/_explain/{id}", "explain", passThrough, false},
	{"GET POST", "/{index}/_termvectors", "termvectors", passThrough, false},
	{"GET POST", "/{index}/_termvectors/{id}", "termvectors", passThrough, false},
	{"GET POST", "/_mtermvectors", "mtermvectors", passThrough, false},
	{"GET POST", "/{index}/_mtermvectors", "mtermvectors", passThrough, false},

	// Searches.
	{"GET POST", "/_search", "search", searchOne, false},
	{"GET POST", "/{index}/_search", "search", searchOne, false},
	{"GET POST", "/_msearch", "msearch", searchMulti, false},
	{"GET POST", "/{index}/_msearch", "msearch", searchMulti, false},
	{"GET POST", "/_search/scroll", "scroll", passThrough, false},
	{"GET POST", "/_search/scroll/{opaque}", "scroll", passThrough, false},
	{"DELETE", "/_search/scroll", "clear_scroll", passThrough, false},
	{"DELETE", "/_search/scroll/{opaque}", "clear_scroll", passThrough, false},
	{"GET POST", "/_count", "count", passThrough, false},
	{"GET POST", "/{index}/_count", "count", passThrough, false},
	{"POST", "/{index}/_pit", "pit", passThrough, false},
	{"DELETE", "/_pit", "pit", passThrough, false},
	{"GET POST", "/_field_caps", "field_caps", passThrough, false},
	{"GET POST", "/{index}/_field_caps", "field_caps", passThrough, false},
	{"GET POST", "/_validate/query", "validate_query", passThrough, false},
	{"GET POST", "/{index}/_validate/query", "validate_query", passThrough, false},
	{"GET POST", "/_search/template", "search_template", passThrough, false},
	{"GET POST", "/{index}/_search/template", "search_template", passThrough, false},
	{"GET POST", "/_msearch/template", "search_template", passThrough, false},
	{"GET POST", "/{index}/_msearch/template", "search_template", passThrough, false},
	{"GET POST", "/_render/template", "search_template", passThrough, false},
	{"POST", "/{index}/_delete_by_query", "delete_by_query", passThrough, true},
	{"POST", "/{index}/_update_by_query", "update_by_query", passThrough, true},

	// Indices.
	{"PUT", "/{target}", "indices.create", indexBody, true},
	{"HEAD", "/{index}", "indices.exists", passThrough, false},
	{"GET", "/{index}", "indices.get", passThrough, false},
	{"DELETE", "/{index}", "indices.delete", passThrough, true},
	{"GET POST", "/_refresh", "refresh", passThrough, false},
	{"GET POST", "/{index}/_refresh", "refresh", passThrough, false},
	{"GET", "/_mapping", "get_mapping", passThrough, false},
	{"GET", "/{index}/_mapping", "get_mapping", passThrough, false},
	{"GET", "/_mapping/field/{id}", "get_mapping", passThrough, false},
	{"GET", "/{index}/_mapping/field/{id}", "get_mapping", passThrough, false},
	{"PUT POST", "/{index}/_mapping", "indices.put_mapping", passThrough, true},
	{"GET", "/_settings", "indices.get_settings", passThrough, false},
	{"GET", "/_settings/{id}", "indices.get_settings", passThrough, false},
	{"GET", "/{index}/_settings", "indices.get_settings", passThrough, false},
	{"GET", "/{index}/_settings/{id}", "indices.get_settings", passThrough, false},
	{"PUT", "/_settings", "indices.put_settings", passThrough, true},
	{"PUT", "/{index}/_settings", "indices.put_settings", passThrough, true},
	{"GET HEAD", "/_alias", "indices.get_alias", passThrough, false},
	{"GET HEAD", "/_alias/{id}", "indices.get_alias", passThrough, false},
	{"GET HEAD", "/{index}/_alias", "indices.get_alias", passThrough, false},
	{"GET HEAD", "/{index}/_alias/{id}", "indices.get_alias", passThrough, false},
	{"GET", "/_aliases", "indices.get_alias", passThrough, false},
	{"PUT POST DELETE", "/{index}/_alias/{target}", "indices.update_aliases", passThrough, true},
	{"PUT POST DELETE", "/{index}/_aliases/{target}", "indices.update_aliases", passThrough, true},
	{"POST", "/_aliases", "indices.update_aliases", aliasActions, false},
	{"POST", "/{index}/_close", "indices.close", passThrough, true},
	{"POST", "/{index}/_open", "indices.open", passThrough, true},
	{"POST", "/_forcemerge", "indices.forcemerge", passThrough, true},
	{"POST", "/{index}/_forcemerge", "indices.forcemerge", passThrough, true},
	{"GET POST", "/_flush", "indices.flush", passThrough, false},
	{"GET POST", "/{index}/_flush", "indices.flush", passThrough, false},
	{"GET", "/_stats", "indices.stats", passThrough, false},
	{"GET", "/_stats/{id}", "indices.stats", passThrough, false},
	{"GET", "/{index}/_stats", "indices.stats", passThrough, false},
	{"GET", "/{index}/_stats/{id}", "indices.stats", passThrough, false},
	{"PUT POST", "/{index}/_clone/{target}", "indices.clone", indexBody, true},
	{"PUT POST", "/{index}/_shrink/{target}", "indices.shrink", indexBody, true},
	{"PUT POST", "/{index}/_split/{target}", "indices.split", indexBody, true},
	{"POST", "/{index}/_rollover", "indices.rollover", indexBody, true},
	{"POST", "/{index}/_rollover/{target}", "indices.rollover", indexBody, true},
	{"GET POST", "/_analyze", "indices.analyze", passThrough, false},
	{"GET POST", "/{index}/_analyze", "indices.analyze", passThrough, false},

	// Cluster.
	{"GET", "/_cluster/health", "cluster.health", passThrough, false},
	{"GET", "/_cluster/health/{index}", "cluster.health", passThrough, false},
	{"GET", "/_cluster/settings", "cluster.get_settings", passThrough, false},
	{"PUT", "/_cluster/settings", "cluster.put_settings", passThrough, false},
	{"POST", "/_reindex", "reindex", reindexBody, false},
}

// namespaces are API families the sidecar does not look into: any method
// and path below /_<name>/ is the operation <name> (/_query is ES|QL),
// refused unless sidecar.allow names it. /_nodes/.../shutdown is
// nodes.shutdown, other /_cluster/... calls are cluster.
var namespaces = map[string]string{
	"_snapshot": "snapshot", "_slm": "slm", "_security": "security", "_ilm": "ilm", "_ingest": "ingest",
	"_cat": "cat", "_tasks": "tasks", "_license": "license", "_ml": "ml", "_transform": "transform",
	"_watcher": "watcher", "_index_template": "index_template", "_component_template": "component_template",
	"_template": "template", "_data_stream": "data_stream", "_scripts": "scripts", "_sql": "sql",
	"_query": "esql", "_eql": "eql", "_async_search": "async_search", "_inference": "inference",
	"_enrich": "enrich", "_ccr": "ccr", "_features": "features", "_nodes": "nodes", "_cluster": "cluster",
	"_resolve": "resolve", "_rollup": "rollup", "_graph": "graph", "_xpack": "xpack", "_migration": "migration",
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

// segments of the route table, parsed once.
type parsedSpec struct {
	spec
	methods map[string]bool
	segs    []string
}

var parsedTable = func() []parsedSpec {
	out := make([]parsedSpec, 0, len(routeTable))
	for _, s := range routeTable {
		p := parsedSpec{spec: s, methods: map[string]bool{}}
		for _, m := range strings.Fields(s.methods) {
			p.methods[m] = true
		}
		if s.path != "/" {
			p.segs = strings.Split(s.path[1:], "/")
		}
		out = append(out, p)
	}
	return out
}()

// refuseOther is the route of a request the table does not name.
func refuseOther(why string) route { return route{Op: "other", Refusal: why} }

// classify matches a request against the route table. rawPath is the
// escaped path as the client sent it (and as it is forwarded): the sidecar
// judges exactly the bytes Elasticsearch will route. Paths that are not in
// canonical form (empty, "." or ".." segments, a trailing slash, ';') match
// nothing, so no normalisation on either side can make the two disagree.
func classify(method, rawPath string) route {
	if rawPath == "/" {
		rawPath = ""
	} else if !strings.HasPrefix(rawPath, "/") {
		return refuseOther("the path must start with /")
	} else {
		rawPath = rawPath[1:]
	}
	var raw []string
	if rawPath != "" {
		raw = strings.Split(rawPath, "/")
	}
	dec := make([]string, len(raw))
	for i, s := range raw {
		if s == "" {
			return refuseOther("empty path segments (// or a trailing /) are not accepted")
		}
		if strings.ContainsRune(s, ';') {
			return refuseOther("';' in a path segment is not accepted")
		}
		u, err := url.PathUnescape(s)
		if err != nil {
			return refuseOther("the path is not validly percent-encoded")
		}
		if u == "." || u == ".." {
			return refuseOther("'.' and '..' path segments are not accepted")
		}
		dec[i] = u
	}
	if len(raw) > 0 {
		if op, ok := namespaces[raw[0]]; ok && !(raw[0] == "_cluster" && len(raw) > 1 && (raw[1] == "health" || raw[1] == "settings")) {
			if op == "nodes" {
				for _, s := range dec[1:] {
					if s == "shutdown" || s == "_shutdown" {
						op = "nodes.shutdown"
					}
				}
			}
			return route{Op: op}
		}
	}
	pathMatched := false
	for _, p := range parsedTable {
		rt, ok := p.match(raw, dec)
		if !ok {
			continue
		}
		pathMatched = true
		if p.methods[method] {
			return rt
		}
	}
	if pathMatched {
		return refuseOther("method " + method + " is not accepted on this path")
	}
	return refuseOther("the path is not one the sidecar knows")
}

// match binds the placeholders of p to the request's segments.
func (p parsedSpec) match(raw, dec []string) (route, bool) {
	if len(raw) != len(p.segs) {
		return route{}, false
	}
	rt := route{Op: p.op, How: p.how, Write: p.write}
	for i, seg := range p.segs {
		switch seg {
		case "{index}", "{target}":
			if !validIndexExpr(dec[i]) {
				return route{}, false
			}
			if seg == "{index}" {
				rt.Index = dec[i]
			} else if p.segs[0] == "{target}" {
				rt.Index = dec[i] // PUT /{target}: the index it creates
			} else {
				rt.Target = dec[i]
			}
		case "{id}":
			if strings.HasPrefix(dec[i], "_") {
				return route{}, false
			}
		case "{opaque}":
		default:
			if raw[i] != seg {
				return route{}, false
			}
		}
	}
	return rt, true
}

// validIndexExpr accepts an index expression as a path segment: no part
// may start with '_' (an API name, where Elasticsearch's router could read
// the path differently) except _all, and a '/' (from %2F) only inside date
// math (<logs-{now/d}>).
func validIndexExpr(expr string) bool {
	for _, part := range strings.Split(expr, ",") {
		name := strings.TrimPrefix(part, "-")
		switch {
		case name == "":
			return false
		case strings.HasPrefix(name, "_") && part != "_all":
			return false
		case strings.ContainsRune(name, '/') && !(strings.HasPrefix(name, "<") && strings.HasSuffix(name, ">")):
			return false
		}
	}
	return true
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

// allowed reports whether op may pass; "other" (a shape the route table
// does not know) never does, not even with "*".
func (a allowSet) allowed(op string) bool { return op != "other" && (a.all || a.ops[op]) }

// labelSet is the bounded set of operation names used as metric labels.
type labelSet map[string]bool

func newLabelSet(allow []string) labelSet {
	l := labelSet{"other": true, "nodes.shutdown": true}
	for _, s := range routeTable {
		l[s.op] = true
	}
	for _, op := range namespaces {
		l[op] = true
	}
	for _, op := range allow {
		l[op] = true
	}
	return l
}

func (l labelSet) label(op string) string {
	if l[op] {
		return op
	}
	return "other"
}

// methodOverrideHeaders ask some proxies and frameworks to treat a request
// as another method; a request carrying one is refused, so that no hop
// behind the sidecar can run a method the sidecar did not check.
var methodOverrideHeaders = []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// refusedParams are query parameters that change what a request does
// beyond what the route table judged: source carries a request body in
// the URL, include_type_name selects typed (v7) behaviour.
var refusedParams = []string{"source", "source_content_type", "include_type_name"}

// requestRefusal returns why a request is refused before its route is
// looked at, or "".
func requestRefusal(r *http.Request, allowV7 bool) string {
	for _, h := range methodOverrideHeaders {
		if _, ok := r.Header[h]; ok {
			return "method override headers (" + h + ") are not accepted"
		}
	}
	if !allowV7 {
		for _, h := range []string{"Content-Type", "Accept"} {
			for _, v := range r.Header.Values(h) {
				for _, ver := range compatVersions(v) {
					if ver != "8" {
						return "compatible-with=" + ver + " media types are not accepted (sidecar.allow_compatible_with_7)"
					}
				}
			}
		}
	}
	if r.URL.RawQuery != "" {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return "the query string is not validly encoded"
		}
		for _, p := range refusedParams {
			if _, ok := q[p]; ok {
				return "the query parameter [" + p + "] is not accepted"
			}
		}
	}
	return ""
}

// compatVersions returns the compatible-with values of a media type
// header (an Accept header may list several). It is lenient about spaces,
// case and quotes, like Elasticsearch's parser; a parameter without a
// readable value is "?".
func compatVersions(h string) []string {
	var out []string
	h = strings.ToLower(h)
	for {
		i := strings.Index(h, "compatible-with")
		if i < 0 {
			return out
		}
		h = strings.TrimLeft(h[i+len("compatible-with"):], " \t")
		if !strings.HasPrefix(h, "=") {
			out = append(out, "?")
			continue
		}
		v := strings.TrimLeft(h[1:], " \t\"")
		if j := strings.IndexAny(v, "\"; ,\t"); j >= 0 {
			v = v[:j]
		}
		if v == "" {
			v = "?"
		}
		out = append(out, v)
	}
}
