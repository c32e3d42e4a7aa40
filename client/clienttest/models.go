package clienttest

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Models is the state behind the fake's admin API (/v1/admin/models): the
// generations, which one each alias points to, and how a switch behaves. A
// switch advances one state (creating, propagating, backfilling,
// reconciling, verifying, cutting_over, done) on every status request, so a
// client that polls sees it progress and finish. Set Gateway.Models before
// the first request; read it back with Gateway.ModelsState.
type Models struct {
	// Alias is the alias name reported (default "images").
	Alias string
	// Generations are the configured generations.
	Generations []Generation
	// Active, Next and Previous name the generations behind the aliases.
	Active, Next, Previous string
	// Documents is how many documents the active generation holds.
	Documents int64
	// FailAt, when set, is the state in which a switch fails with FailError.
	FailAt, FailError string
	// pruned are the generations whose index was deleted.
	pruned []string
}

// Generation is a configured generation of the fake.
type Generation struct {
	Name                     string
	ImageModel, ImageVersion string
	TextModel, TextVersion   string
}

// switchStates are the states a fake switch goes through, one per poll.
var switchStates = []string{"creating", "propagating", "backfilling", "reconciling", "verifying", "cutting_over", "done"}

// switchJob is the switch the fake runs.
type switchJob struct {
	from, to, state, err string
	step                 int
	running, noop        bool
	total                int64
	started, finished    time.Time
}

// ModelsState returns a copy of the admin API's state.
func (g *Gateway) ModelsState() Models {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.Models == nil {
		return Models{}
	}
	m := *g.Models
	m.Generations = slices.Clone(m.Generations)
	return m
}

func (g *Gateway) adminAuthorized(w http.ResponseWriter, r *http.Request) bool {
	if len(g.AdminKeys) == 0 {
		writeError(w, http.StatusForbidden, "admin_disabled", "the admin API is disabled: no auth.admin_keys are configured")
		return false
	}
	key := r.Header.Get("X-API-Key")
	if key == "" {
		scheme, k, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if strings.EqualFold(scheme, "ApiKey") {
			key = k
		}
	}
	if !slices.Contains(g.AdminKeys, key) {
		w.Header().Set("WWW-Authenticate", `ApiKey realm="tusou-admin"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "a valid admin key is required (Authorization: ApiKey <key>)")
		return false
	}
	return true
}

// admin serves /v1/admin/models and below, as the real gateway does.
func (g *Gateway) admin(w http.ResponseWriter, r *http.Request) {
	if !g.adminAuthorized(w, r) {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.Models
	if m == nil {
		writeError(w, 404, "route_not_found", "no route for %s %s", r.Method, r.URL.Path)
		return
	}
	switch r.Method + " " + r.URL.Path {
	case "GET /v1/admin/models":
		g.advanceSwitch()
		writeJSON(w, 200, g.modelsStatus())
	case "POST /v1/admin/models/switch":
		var req struct {
			To string `json:"to"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.To == "" {
			writeError(w, 400, "invalid_json", "want {\"to\":\"<generation>\"}")
			return
		}
		g.startSwitch(w, req.To)
	case "POST /v1/admin/models/rollback":
		if m.Previous == "" {
			writeError(w, 409, "no_previous", "no previous generation to roll back to (alias %s-previous does not exist)", m.alias())
			return
		}
		g.startSwitch(w, m.Previous)
	case "POST /v1/admin/models/prune":
		var req struct {
			Generation string `json:"generation"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeError(w, 400, "invalid_json", "%v", err)
			return
		}
		gen := req.Generation
		if gen == "" {
			gen = m.Previous
		}
		switch {
		case gen == "":
			writeError(w, 404, "no_previous", "no previous generation to prune")
		case gen == m.Active || gen == m.Next:
			writeError(w, 409, "generation_in_use", "generation %q is in use (active or next): it cannot be pruned", gen)
		case m.index(gen) == "":
			writeError(w, 404, "index_not_found", "generation %q has no index", gen)
		default:
			idx := m.index(gen)
			m.pruned = append(m.pruned, gen)
			if m.Previous == gen {
				m.Previous = ""
			}
			writeJSON(w, 200, map[string]string{"deleted_index": idx, "generation": gen})
		}
	case "DELETE /v1/admin/models/switch":
		if g.sw != nil && g.sw.running {
			g.sw.running, g.sw.state, g.sw.err, g.sw.finished = false, "aborted", "aborted by an admin request", time.Now().UTC()
			m.Next = ""
		}
		writeJSON(w, 200, g.modelsStatus())
	default:
		writeError(w, 404, "route_not_found", "no route for %s %s", r.Method, r.URL.Path)
	}
}

// startSwitch answers a switch or rollback request; g.mu is held.
func (g *Gateway) startSwitch(w http.ResponseWriter, to string) {
	m := g.Models
	if !slices.ContainsFunc(m.Generations, func(gen Generation) bool { return gen.Name == to }) {
		writeError(w, 404, "unknown_generation", "generation %q is not configured", to)
		return
	}
	if g.sw != nil && g.sw.running {
		if g.sw.to != to {
			writeError(w, 409, "switch_in_progress", "a switch to %q is running; abort it first", g.sw.to)
			return
		}
		writeJSON(w, 202, g.modelsStatus())
		return
	}
	now := time.Now().UTC()
	if m.Active == to && m.Next == "" {
		g.sw = &switchJob{from: to, to: to, state: "done", noop: true, started: now, finished: now}
		writeJSON(w, 200, g.modelsStatus())
		return
	}
	g.sw = &switchJob{from: m.Active, to: to, state: switchStates[0], running: true, total: m.Documents, started: now}
	m.Next = to
	m.pruned = slices.DeleteFunc(m.pruned, func(p string) bool { return p == to })
	writeJSON(w, 202, g.modelsStatus())
}

// advanceSwitch moves a running switch one state on; g.mu is held.
func (g *Gateway) advanceSwitch() {
	sw, m := g.sw, g.Models
	if sw == nil || !sw.running {
		return
	}
	sw.step++
	sw.state = switchStates[sw.step]
	switch {
	case sw.state == m.FailAt:
		sw.running, sw.state, sw.err, sw.finished = false, "failed", m.FailError, time.Now().UTC()
	case sw.state == "done":
		sw.running, sw.finished = false, time.Now().UTC()
		m.Previous, m.Active, m.Next = m.Active, sw.to, ""
	}
}

func (m *Models) alias() string {
	if m.Alias == "" {
		return "images"
	}
	return m.Alias
}

// index is the concrete index of generation gen; "" when it has none.
func (m *Models) index(gen string) string {
	if slices.Contains(m.pruned, gen) || (gen != m.Active && gen != m.Next && gen != m.Previous) {
		return ""
	}
	return m.alias() + "-" + gen + "-000001"
}

// modelsStatus renders the Status JSON of the admin API contract; g.mu is held.
func (g *Gateway) modelsStatus() map[string]any {
	m, sw := g.Models, g.sw
	orNull := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	gens := []map[string]any{}
	for _, gen := range m.Generations {
		role, docs := "unused", int64(0)
		switch gen.Name {
		case m.Active:
			role, docs = "active", m.Documents
		case m.Next:
			role = "next"
			if sw != nil && sw.to == gen.Name && sw.step >= 2 {
				docs = sw.total * int64(min(sw.step-1, 2)) / 2
			}
		case m.Previous:
			role, docs = "previous", m.Documents
		}
		if m.index(gen.Name) == "" {
			docs = -1 // no index, as the real gateway says
		}
		gens = append(gens, map[string]any{
			"name": gen.Name, "role": role, "index": m.index(gen.Name), "documents": docs,
			"dims": 512, "fingerprint": "f1n6e7" + gen.Name, "configured": true,
			"image_model": map[string]string{"name": gen.ImageModel, "version": gen.ImageVersion},
			"text_model":  map[string]string{"name": gen.TextModel, "version": gen.TextVersion},
		})
	}
	out := map[string]any{"alias": m.alias(), "active": orNull(m.Active), "next": orNull(m.Next),
		"previous": orNull(m.Previous), "generations": gens, "switch": nil}
	switch {
	case sw != nil:
		// Backfilling has scanned half, later states all of the documents.
		scanned := sw.total * int64(min(max(sw.step-1, 0), 2)) / 2
		if sw.noop {
			scanned = 0
		}
		s := map[string]any{"from": sw.from, "to": sw.to, "state": sw.state, "running": sw.running,
			"total": sw.total, "scanned": scanned, "created": scanned, "skipped": 0, "deleted": 0, "failed": 0,
			"missing_originals": 0, "docs_per_second": 85.3, "started_at": sw.started, "updated_at": time.Now().UTC(),
			"finished_at": nil, "error": orNull(sw.err)}
		if sw.noop {
			s["noop"] = true
		}
		if !sw.finished.IsZero() {
			s["finished_at"] = sw.finished
		}
		out["switch"] = s
	case m.Next != "":
		out["switch"] = map[string]any{"to": m.Next, "state": "interrupted", "running": false}
	}
	return out
}
