package models

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/internal/promreg"
)

// Error codes of the catalog.
const (
	// CodeStale: this gateway could not re-read the generations lately.
	CodeStale = "generations_stale"
	// CodeUnknownGeneration: an alias points at an index this gateway has
	// no generation for.
	CodeUnknownGeneration = "unknown_generation"
)

// View is one reading of the aliases.
type View struct {
	// Active is searched and written; nil only when the alias points at an
	// index this gateway has no generation for (UnknownActive).
	Active *Generation
	// Next is being filled by a switch (nil: no switch).
	Next *Generation
	// Previous was active before the last switch (nil: none kept).
	Previous *Generation
	// UnknownActive and UnknownNext name indices behind <alias> and
	// <alias>-next that are no configured generation's.
	UnknownActive, UnknownNext string
	// At is when the aliases were read.
	At time.Time
}

// CatalogOptions configure a Catalog.
type CatalogOptions struct {
	// PollInterval is how often the aliases are re-read.
	PollInterval time.Duration
	// MaxStaleness is how old a view may be for writes.
	MaxStaleness time.Duration
}

// Catalog is a gateway's view of its generations and the aliases that say
// which is active. It is safe for concurrent use.
type Catalog struct {
	base  *esproxy.Client // unpinned: aliases, index metadata
	alias string
	gens  []*Generation
	opts  CatalogOptions
	log   *zap.Logger

	view atomic.Pointer[View]
	// openMu serialises Open (index creation and checks).
	openMu sync.Mutex
	// indexGen caches which generation an index belongs to ("" for none):
	// an index's provenance never changes.
	indexMu  sync.Mutex
	indexGen map[string]string
	// retired are stores of indices a generation no longer lives in
	// (repinned or pruned), closed by Close: requests may still hold them.
	// Guarded by openMu.
	retired []*esproxy.Client

	pollErrors prometheus.Counter
	viewAge    prometheus.GaugeFunc
	active     *prometheus.GaugeVec
}

// NewCatalog returns a catalog over gens (names unique, Index set). base is
// the unpinned Elasticsearch client of the alias. reg may be nil.
func NewCatalog(base *esproxy.Client, gens []*Generation, opts CatalogOptions, log *zap.Logger, reg prometheus.Registerer) *Catalog {
	if log == nil {
		log = zap.NewNop()
	}
	c := &Catalog{base: base, alias: base.Alias(), gens: gens, opts: opts, log: log, indexGen: map[string]string{}}
	for _, g := range gens {
		c.indexGen[g.Index()] = g.Name
	}
	c.pollErrors = promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tusou_models_poll_errors_total",
		Help: "Failed readings of the generation aliases.",
	}))
	c.active = promreg.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tusou_models_generation_role",
		Help: "1 for the role each configured generation has now (active, next, previous, unused).",
	}, []string{"generation", "role"}))
	c.viewAge = promreg.Register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tusou_models_view_age_seconds",
		Help: "Age of this gateway's reading of the generation aliases; writes are refused past models.max_staleness.",
	}, func() float64 {
		if v := c.view.Load(); v != nil {
			return time.Since(v.At).Seconds()
		}
		return 0
	}))
	return c
}

// Alias is the alias of the active generation; NextAlias and PreviousAlias
// those of the switch state.
func (c *Catalog) Alias() string         { return c.alias }
func (c *Catalog) NextAlias() string     { return c.alias + NextSuffix }
func (c *Catalog) PreviousAlias() string { return c.alias + PreviousSuffix }

// Base is the unpinned Elasticsearch client.
func (c *Catalog) Base() *esproxy.Client { return c.base }

// Generations returns the configured generations in configuration order.
func (c *Catalog) Generations() []*Generation { return c.gens }

// Generation returns the configured generation called name, or nil.
func (c *Catalog) Generation(name string) *Generation {
	for _, g := range c.gens {
		if g.Name == name {
			return g
		}
	}
	return nil
}

// Start reads the aliases for the first time. When the alias does not exist
// it creates initial's index carrying it; when it points at an index that
// is no configured generation's, start-up fails: serving vectors of an
// unknown model is worse than not serving.
func (c *Catalog) Start(ctx context.Context, initial string) error {
	if _, err := c.Refresh(ctx); err != nil {
		return err
	}
	v := c.View()
	if v.Active == nil && v.UnknownActive == "" {
		g := c.Generation(initial)
		if g == nil {
			return fmt.Errorf("models.initial: %q is not a configured generation", initial)
		}
		gi, err := c.base.EnsureGeneration(ctx, g.Prov, g.Index(), true)
		if err != nil {
			return err
		}
		c.log.Info("generation index ready", zap.String("generation", g.Name), zap.Stringer("index", gi))
		if _, err := c.Refresh(ctx); err != nil {
			return err
		}
		v = c.View()
	}
	if v.Active == nil {
		return apierr.New(apierr.Conflict, esproxy.CodeIndexMismatch,
			"alias %q points at %q, which holds no configured generation's vectors (%s): add that generation to models.generations or move the alias",
			c.alias, v.UnknownActive, c.whyNot(ctx, v.UnknownActive))
	}
	return nil
}

// whyNot says why index belongs to none of the configured generations.
func (c *Catalog) whyNot(ctx context.Context, index string) string {
	p, _, err := c.base.IndexProvenance(ctx, index)
	if err != nil {
		return err.Error()
	}
	var why []string
	for _, g := range c.gens {
		if same, reason := esproxy.SameModel(p, g.Prov); !same {
			why = append(why, fmt.Sprintf("not generation %q: %s", g.Name, reason))
		} else {
			why = append(why, fmt.Sprintf("not generation %q: the index says it belongs to %q", g.Name, p.Generation))
		}
	}
	return strings.Join(why, "; ")
}

// Run re-reads the aliases every poll interval until ctx ends.
func (c *Catalog) Run(ctx context.Context) {
	t := time.NewTicker(c.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := c.Refresh(ctx); err != nil && ctx.Err() == nil {
			c.pollErrors.Inc()
			c.log.Warn("reading the generation aliases failed", zap.Error(err))
		}
	}
}

// View returns the latest reading (never nil after Start).
func (c *Catalog) View() *View {
	if v := c.view.Load(); v != nil {
		return v
	}
	return &View{}
}

// Refresh reads the aliases now, opens the generations they name and
// publishes the new view.
func (c *Catalog) Refresh(ctx context.Context) (*View, error) {
	at := time.Now()
	targets, err := c.base.AliasTargets(ctx, c.alias, c.NextAlias(), c.PreviousAlias())
	if err != nil {
		return nil, err
	}
	v := &View{At: at}
	var errs []string
	pick := func(alias string, unknown *string) *Generation {
		idx := targets[alias]
		if len(idx) == 0 {
			return nil
		}
		if len(idx) > 1 {
			errs = append(errs, fmt.Sprintf("alias %q points at %d indices (%s); one generation at a time", alias, len(idx), strings.Join(idx, ", ")))
			return nil
		}
		g, err := c.generationOf(ctx, idx[0])
		if err != nil {
			errs = append(errs, err.Error())
			return nil
		}
		if g == nil {
			if unknown != nil {
				*unknown = idx[0]
			}
			return nil
		}
		switch {
		case unknown != nil && (g.Store() == nil || g.Index() != idx[0]):
			// Active and next are written: pin g where the alias says it
			// lives, also when it moved since (a pruned legacy index
			// recreated under g's own name by another gateway).
			if err := c.openAt(ctx, g, idx[0]); err != nil {
				errs = append(errs, err.Error())
				return nil
			}
		case g.Store() == nil:
			if _, err := c.Open(ctx, g); err != nil {
				errs = append(errs, err.Error())
				return nil
			}
		}
		return g
	}
	v.Active = pick(c.alias, &v.UnknownActive)
	v.Next = pick(c.NextAlias(), &v.UnknownNext)
	v.Previous = pick(c.PreviousAlias(), nil)
	if len(errs) > 0 {
		return nil, apierr.New(apierr.Conflict, esproxy.CodeIndexMismatch, "generation aliases: %s", strings.Join(errs, "; "))
	}
	// Two readings may overlap (the poller and an admin call): the one that
	// started later wins, so the view never goes back in time.
	old := c.view.Load()
	for {
		if old != nil && old.At.After(v.At) {
			return old, nil
		}
		if c.view.CompareAndSwap(old, v) {
			break
		}
		old = c.view.Load()
	}
	if old == nil || old.Active != v.Active || old.Next != v.Next {
		c.log.Info("generations", zap.String("active", nameOf(v.Active)), zap.String("next", nameOf(v.Next)),
			zap.String("previous", nameOf(v.Previous)), zap.String("unknown_active", v.UnknownActive), zap.String("unknown_next", v.UnknownNext))
	}
	for _, g := range []*Generation{v.Active, v.Next} {
		if g != nil {
			g.inUse.Store(at.UnixNano())
		}
	}
	for _, g := range c.gens {
		for _, r := range []Role{RoleActive, RoleNext, RolePrevious, RoleUnused} {
			val := 0.0
			if v.RoleOf(g) == r {
				val = 1
			}
			c.active.WithLabelValues(g.Name, string(r)).Set(val)
		}
	}
	return v, nil
}

// RoleOf is g's role in v.
func (v *View) RoleOf(g *Generation) Role {
	switch g {
	case nil:
		return ""
	case v.Active:
		return RoleActive
	case v.Next:
		return RoleNext
	case v.Previous:
		return RolePrevious
	}
	return RoleUnused
}

// Open makes g's index exist (creating it without any alias) after checking
// any existing one holds g's vectors, and pins g's store to it.
func (c *Catalog) Open(ctx context.Context, g *Generation) (*esproxy.Client, error) {
	c.openMu.Lock()
	defer c.openMu.Unlock()
	if s := g.Store(); s != nil {
		return s, nil
	}
	gi, err := c.base.EnsureGeneration(ctx, g.Prov, g.Index(), false)
	if err != nil {
		return nil, err
	}
	s := c.base.ForIndex(gi.Name, g.Prov, gi.Quantized)
	g.store.Store(s)
	return s, nil
}

// openAt pins g to index, an existing index that must hold g's vectors,
// replacing a store pinned to another index.
func (c *Catalog) openAt(ctx context.Context, g *Generation, index string) error {
	c.openMu.Lock()
	defer c.openMu.Unlock()
	if s := g.Store(); s != nil && s.Target() == index {
		g.index.Store(&index)
		return nil
	}
	gi, err := c.base.EnsureGeneration(ctx, g.Prov, index, false)
	if err != nil {
		return err
	}
	g.index.Store(&index)
	if old := g.store.Swap(c.base.ForIndex(gi.Name, g.Prov, gi.Quantized)); old != nil {
		c.retired = append(c.retired, old)
	}
	return nil
}

// forget unpins g after its index was deleted: a later switch to g creates
// its index under g's own name (not that of a pruned index from before
// generations had names) and pins it then.
func (c *Catalog) forget(g *Generation) {
	c.openMu.Lock()
	defer c.openMu.Unlock()
	idx := esproxy.ConcreteIndexName(c.alias, g.Prov)
	g.index.Store(&idx)
	c.indexMu.Lock()
	c.indexGen[idx] = g.Name
	c.indexMu.Unlock()
	if old := g.store.Swap(nil); old != nil {
		c.retired = append(c.retired, old)
	}
}

// Close closes the generations' pinned stores.
func (c *Catalog) Close(ctx context.Context) {
	for _, g := range c.gens {
		if s := g.store.Swap(nil); s != nil {
			_ = s.Close(ctx)
		}
	}
	c.openMu.Lock()
	retired := c.retired
	c.retired = nil
	c.openMu.Unlock()
	for _, s := range retired {
		_ = s.Close(ctx)
	}
}

// Reader is the generation searches use: the active one. Searches go on
// with an old view (the previous active index still answers).
func (c *Catalog) Reader() (*Generation, error) {
	v := c.View()
	if v.Active == nil {
		return nil, c.unknown(c.alias, v.UnknownActive)
	}
	return v.Active, nil
}

// Writers are the generations a write goes to: the active one and, during
// a switch, the one being filled. A view older than max_staleness is
// refused (Unavailable): the gateway might have missed a switch and write
// to one generation only.
func (c *Catalog) Writers() (active, next *Generation, err error) {
	v := c.View()
	if age := time.Since(v.At); age > c.opts.MaxStaleness {
		return nil, nil, apierr.New(apierr.Unavailable, CodeStale,
			"this gateway could not read the generation aliases for %s (models.max_staleness %s); writes wait until Elasticsearch answers again",
			age.Round(time.Second), c.opts.MaxStaleness).WithRetryAfter(c.opts.PollInterval * 2)
	}
	if v.Active == nil {
		return nil, nil, c.unknown(c.alias, v.UnknownActive)
	}
	if v.UnknownNext != "" {
		return nil, nil, c.unknown(c.NextAlias(), v.UnknownNext)
	}
	return v.Active, v.Next, nil
}

// Ready is the readiness check: an error while this gateway may not write
// (stale view, an alias on an index it has no generation for).
func (c *Catalog) Ready(context.Context) error {
	_, _, err := c.Writers()
	return err
}

func (c *Catalog) unknown(alias, index string) error {
	return apierr.New(apierr.Unavailable, CodeUnknownGeneration,
		"alias %q points at index %q, which is no generation this gateway serves (configured: %s): roll out the configuration that has it",
		alias, index, c.names()).WithRetryAfter(5 * time.Second)
}

// generationOf maps a concrete index to its configured generation (nil for
// none): by name first, else by the provenance stored in the index (indices
// made before generations had names).
func (c *Catalog) generationOf(ctx context.Context, index string) (*Generation, error) {
	c.indexMu.Lock()
	name, known := c.indexGen[index]
	c.indexMu.Unlock()
	if !known {
		p, found, err := c.base.IndexProvenance(ctx, index)
		if err != nil {
			return nil, err
		}
		if found {
			for _, g := range c.gens {
				if same, _ := esproxy.SameModel(p, g.Prov); same && (p.Generation == "" || p.Generation == g.Name) {
					name = g.Name
					break
				}
			}
		}
		c.indexMu.Lock()
		c.indexGen[index] = name
		c.indexMu.Unlock()
		if name != "" {
			if g := c.Generation(name); g != nil && g.Index() != index && g.Store() == nil {
				// An index made before generations had names: the
				// generation lives there.
				g.index.Store(&index)
			}
		}
	}
	if name == "" {
		return nil, nil
	}
	return c.Generation(name), nil
}

func (c *Catalog) names() string {
	n := make([]string, len(c.gens))
	for i, g := range c.gens {
		n[i] = g.Name
	}
	sort.Strings(n)
	return strings.Join(n, ", ")
}

func nameOf(g *Generation) string {
	if g == nil {
		return ""
	}
	return g.Name
}
