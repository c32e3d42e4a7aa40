package models

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/internal/promreg"
)

// Error codes of the switcher.
const (
	CodeSwitchInProgress = "switch_in_progress"
	CodeNoPrevious       = "no_previous"
	CodeGenerationInUse  = "generation_in_use"
	// CodeRecentlyInUse: the generation was written to moments ago; other
	// gateways may still write to it until they re-read the aliases.
	CodeRecentlyInUse = "generation_recently_in_use"
	// CodeNoIndex: prune of a generation that has no index.
	CodeNoIndex = "generation_has_no_index"
	// CodeVerifyFailed: the filled generation does not match the active one.
	CodeVerifyFailed = "switch_verification_failed"
	// CodeDocumentsFailed: some documents could not be re-embedded.
	CodeDocumentsFailed = "switch_documents_failed"
	// CodeTooManyErrors: more than max_errors documents failed.
	CodeTooManyErrors = "switch_too_many_errors"
	// CodeNoOriginals: no blob store, so nothing to re-embed from.
	CodeNoOriginals = "no_originals"
	// CodeAliasesMoved: the aliases changed under a running switch.
	CodeAliasesMoved = "switch_aliases_moved"
)

// SwitchOptions bound a switch's work. Zero fields take the defaults.
type SwitchOptions struct {
	// Workers is how many documents are re-embedded at once.
	Workers int
	// PageSize is how many ids are compared per page (at most
	// esproxy.MaxExistsIDs); a page's missing documents go in one bulk write.
	PageSize int
	// MaxErrors is how many documents may fail before the switch stops.
	MaxErrors int
	// Propagation is how long the switch waits after adding <alias>-next
	// before it copies anything, so every gateway dual-writes by then: at
	// least twice models.poll_interval.
	Propagation time.Duration
	// MaxOriginalBytes is the largest original read (the ingest limit).
	MaxOriginalBytes int64
	// Budget, when set, is charged for the originals being re-embedded
	// (server.memory_budget_bytes, shared with live requests): the backfill
	// waits for room instead of taking it from them.
	Budget Budget
}

// Budget bounds the bytes held at once (admission.Budget).
type Budget interface {
	TryAcquire(n int64) bool
	Release(n int64)
}

// DefaultSwitchOptions are the options zero fields take.
func DefaultSwitchOptions() SwitchOptions {
	return SwitchOptions{Workers: 4, PageSize: 256, MaxErrors: 100, Propagation: 2 * time.Second, MaxOriginalBytes: 64 << 20}
}

func (o SwitchOptions) withDefaults() SwitchOptions {
	d := DefaultSwitchOptions()
	if o.Workers < 1 {
		o.Workers = d.Workers
	}
	if o.PageSize < 1 {
		o.PageSize = d.PageSize
	}
	o.PageSize = min(o.PageSize, esproxy.MaxExistsIDs)
	if o.MaxErrors <= 0 {
		o.MaxErrors = d.MaxErrors
	}
	if o.Propagation <= 0 {
		o.Propagation = d.Propagation
	}
	if o.MaxOriginalBytes <= 0 {
		o.MaxOriginalBytes = d.MaxOriginalBytes
	}
	return o
}

// PruneResult is what Prune deleted.
type PruneResult struct {
	DeletedIndex string `json:"deleted_index"`
	Generation   string `json:"generation"`
}

// Switcher fills a generation from the stored originals and moves the
// aliases to it (see the package doc), one switch at a time per gateway. It
// owns the goroutine of the running switch: Close stops it.
type Switcher struct {
	cat       *Catalog
	originals Originals
	opts      SwitchOptions
	log       *zap.Logger
	m         *switchMetrics

	// mu serialises the operations that start, stop or judge a job.
	mu sync.Mutex
	// job is the running switch, or the last one (nil: none ran here).
	job *job
}

// NewSwitcher returns a switcher over cat's generations reading originals
// from originals (nil: none kept; switches are refused). log and reg may
// be nil.
func NewSwitcher(cat *Catalog, originals Originals, opts SwitchOptions, log *zap.Logger, reg prometheus.Registerer) *Switcher {
	if log == nil {
		log = zap.NewNop()
	}
	return &Switcher{cat: cat, originals: originals, opts: opts.withDefaults(), log: log, m: newSwitchMetrics(reg)}
}

// errAborted and errClosed are the causes a job is canceled with.
var (
	errAborted = errors.New("switch aborted")
	errClosed  = errors.New("gateway shutting down")
)

// job is one switch.
type job struct {
	from, to *Generation
	prog     *progress
	cancel   context.CancelCauseFunc
	done     chan struct{}
	noop     bool

	mu         sync.Mutex
	state      string
	err        error
	startedAt  time.Time
	finishedAt time.Time
}

func (j *job) setState(s string) {
	j.mu.Lock()
	j.state = s
	j.mu.Unlock()
	j.prog.touch()
}

func (j *job) running() bool {
	select {
	case <-j.done:
		return false
	default:
		return true
	}
}

// status is a snapshot of the job's progress.
func (j *job) status() *SwitchStatus {
	j.mu.Lock()
	defer j.mu.Unlock()
	p := j.prog
	st := &SwitchStatus{
		From: nameOf(j.from), To: nameOf(j.to), State: j.state, Running: j.running(), Noop: j.noop,
		Total: p.total.Load(), Scanned: p.scanned.Load(), Pass: int(p.pass.Load()), Created: p.created.Load(), Skipped: p.skipped.Load(),
		Deleted: p.deleted.Load(), Failed: int64(p.failedCount()), MissingOriginals: int64(p.missingCount()),
		DocsPerSecond: math.Round(p.docsPerSecond()*10) / 10,
		StartedAt:     j.startedAt.UTC(), UpdatedAt: time.Unix(0, p.updated.Load()).UTC(),
	}
	if !j.finishedAt.IsZero() {
		t := j.finishedAt.UTC()
		st.FinishedAt = &t
	}
	if j.err != nil {
		msg := errText(j.err)
		st.Error = &msg
	}
	return st
}

// Switch starts a switch to the generation called to in the background and
// returns its status. started is false when it returns a switch already
// running to the same generation, or a finished no-op (to is active and no
// switch is pending). A switch to another generation than a running or
// pending one is a Conflict (switch_in_progress); an unknown name NotFound
// (unknown_generation).
func (s *Switcher) Switch(ctx context.Context, to string) (st *SwitchStatus, started bool, err error) {
	g := s.cat.Generation(to)
	if g == nil {
		return nil, false, apierr.New(apierr.NotFound, CodeUnknownGeneration, "generation %q is not configured (configured: %s)", to, s.cat.names())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if j := s.job; j != nil && j.running() {
		if j.to == g {
			return j.status(), false, nil
		}
		return nil, false, apierr.New(apierr.Conflict, CodeSwitchInProgress,
			"a switch to generation %q is running; wait for it or abort it (DELETE /v1/admin/models/switch)", j.to.Name)
	}
	v, err := s.cat.Refresh(ctx)
	if err != nil {
		return nil, false, err
	}
	if v.Active == nil {
		return nil, false, s.cat.unknown(s.cat.Alias(), v.UnknownActive)
	}
	if v.UnknownNext != "" {
		return nil, false, apierr.New(apierr.Conflict, CodeSwitchInProgress,
			"alias %q points at %q, which is no configured generation's: a switch from another configuration is pending; abort it first",
			s.cat.NextAlias(), v.UnknownNext)
	}
	if v.Next != nil && v.Next != g {
		return nil, false, apierr.New(apierr.Conflict, CodeSwitchInProgress,
			"a switch to generation %q is pending (alias %q); resume it (switch to %q) or abort it first", v.Next.Name, s.cat.NextAlias(), v.Next.Name)
	}
	now := time.Now()
	if v.Active == g {
		j := &job{from: g, to: g, prog: newProgress(s.m), done: make(chan struct{}), noop: true,
			state: StateDone, startedAt: now, finishedAt: now}
		close(j.done)
		s.job = j
		return j.status(), false, nil
	}
	if s.originals == nil {
		return nil, false, apierr.New(apierr.Conflict, CodeNoOriginals,
			"this gateway keeps no originals (blobs), and a switch re-embeds every image from its stored original: configure blobs and re-ingest")
	}
	jctx, cancel := context.WithCancelCause(context.Background())
	j := &job{from: v.Active, to: g, prog: newProgress(s.m), cancel: cancel, done: make(chan struct{}),
		state: StateCreating, startedAt: now}
	s.job = j
	s.log.Info("switch started", zap.String("from", j.from.Name), zap.String("to", g.Name))
	go s.run(jctx, j)
	return j.status(), true, nil
}

// Rollback switches back to the generation behind <alias>-previous
// (Conflict no_previous when there is none).
func (s *Switcher) Rollback(ctx context.Context) (*SwitchStatus, bool, error) {
	v, err := s.cat.Refresh(ctx)
	if err != nil {
		return nil, false, err
	}
	if v.Previous == nil {
		return nil, false, apierr.New(apierr.Conflict, CodeNoPrevious,
			"there is no previous generation to roll back to (alias %q points at no configured generation's index)", s.cat.PreviousAlias())
	}
	return s.Switch(ctx, v.Previous.Name)
}

// Prune deletes the index of the generation called gen ("" the previous
// one), and with it the <alias>-previous alias when it carries it. The
// active and the next generation are refused (generation_in_use).
func (s *Switcher) Prune(ctx context.Context, gen string) (PruneResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.cat.Refresh(ctx)
	if err != nil {
		return PruneResult{}, err
	}
	g := v.Previous
	if gen != "" {
		if g = s.cat.Generation(gen); g == nil {
			return PruneResult{}, apierr.New(apierr.NotFound, CodeUnknownGeneration, "generation %q is not configured (configured: %s)", gen, s.cat.names())
		}
	} else if g == nil {
		return PruneResult{}, apierr.New(apierr.Conflict, CodeNoPrevious, "there is no previous generation to prune; name one")
	}
	switch {
	case g == v.Active:
		return PruneResult{}, apierr.New(apierr.Conflict, CodeGenerationInUse, "generation %q is active: it cannot be pruned", g.Name)
	case g == v.Next:
		return PruneResult{}, apierr.New(apierr.Conflict, CodeGenerationInUse, "generation %q is being filled by a switch: abort it first", g.Name)
	}
	if j := s.job; j != nil && j.running() && (j.to == g || j.from == g) {
		return PruneResult{}, apierr.New(apierr.Conflict, CodeGenerationInUse, "a running switch uses generation %q", g.Name)
	}
	// A gateway that has not re-read the aliases yet may still write to g;
	// its write to a deleted index would make Elasticsearch create an
	// unmapped one under that name.
	if wait := s.opts.Propagation - time.Since(g.LastInUse()); wait > 0 {
		return PruneResult{}, apierr.New(apierr.Conflict, CodeRecentlyInUse,
			"generation %q was written to %s ago; gateways may still write to it until they re-read the aliases: prune again in %s",
			g.Name, time.Since(g.LastInUse()).Round(time.Second), wait.Round(time.Second)).WithRetryAfter(wait)
	}
	index := g.Index()
	if err := s.cat.Base().DeleteConcrete(ctx, index); err != nil {
		if apierr.KindOf(err) == apierr.NotFound {
			return PruneResult{}, apierr.New(apierr.NotFound, CodeNoIndex, "generation %q has no index (%s)", g.Name, index)
		}
		return PruneResult{}, err
	}
	// A later switch to g creates its index again under g's own name.
	s.cat.forget(g)
	s.log.Info("generation pruned", zap.String("generation", g.Name), zap.String("index", index))
	if _, err := s.cat.Refresh(ctx); err != nil {
		s.log.Warn("re-reading the generation aliases after a prune failed", zap.Error(err))
	}
	return PruneResult{DeletedIndex: index, Generation: g.Name}, nil
}

// Abort stops a running switch (waiting for it until ctx ends) and removes
// <alias>-next, also that of a switch interrupted elsewhere. The filled
// index is kept: a later switch to it resumes. Nothing to abort is not an
// error.
func (s *Switcher) Abort(ctx context.Context) (*Status, error) {
	s.mu.Lock()
	err := s.abort(ctx)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return s.Status(ctx)
}

func (s *Switcher) abort(ctx context.Context) error {
	if j := s.job; j != nil && j.running() {
		j.cancel(errAborted)
		select {
		case <-j.done:
		case <-ctx.Done():
			return apierr.Wrap(ctx.Err(), apierr.Timeout, "switch_abort_timeout", "the switch did not stop in time; retry")
		}
	}
	base := s.cat.Base()
	targets, err := base.AliasTargets(ctx, s.cat.NextAlias())
	if err != nil {
		return err
	}
	var actions []esproxy.AliasAction
	for _, idx := range targets[s.cat.NextAlias()] {
		actions = append(actions, esproxy.AliasAction{Op: "remove", Index: idx, Alias: s.cat.NextAlias()})
	}
	if len(actions) > 0 {
		if err := base.UpdateAliases(ctx, actions); err != nil {
			return err
		}
		s.log.Info("switch aborted: next alias removed", zap.Strings("indices", targets[s.cat.NextAlias()]))
	}
	if _, err := s.cat.Refresh(ctx); err != nil {
		s.log.Warn("re-reading the generation aliases after an abort failed", zap.Error(err))
	}
	return nil
}

// Close stops a running switch and waits for its goroutine until ctx ends.
// <alias>-next stays: the switch shows as interrupted and resumes when run
// again.
func (s *Switcher) Close(ctx context.Context) error {
	s.mu.Lock()
	j := s.job
	s.mu.Unlock()
	if j == nil || !j.running() {
		return nil
	}
	j.cancel(errClosed)
	select {
	case <-j.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run is the goroutine of one switch.
func (s *Switcher) run(ctx context.Context, j *job) {
	defer close(j.done)
	s.m.running.Set(1)
	defer s.m.running.Set(0)
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("switch panicked: %v", p)
				s.log.Error("switch panicked", zap.Any("panic", p), zap.Stack("stack"))
			}
		}()
		err = s.steps(ctx, j)
	}()
	state, outcome := StateDone, StateDone
	switch cause := context.Cause(ctx); {
	case err == nil:
	case errors.Is(cause, errAborted) || errors.Is(cause, errClosed):
		state, outcome, err = StateAborted, StateAborted, cause
	default:
		state, outcome = StateFailed, StateFailed
	}
	j.mu.Lock()
	j.state, j.err, j.finishedAt = state, err, time.Now()
	j.mu.Unlock()
	j.prog.touch()
	s.m.switches.WithLabelValues(outcome).Inc()
	st := j.status()
	log := s.log.Info
	if state == StateFailed {
		log = s.log.Error
	}
	log("switch "+state, zap.String("from", st.From), zap.String("to", st.To), zap.Int64("created", st.Created),
		zap.Int64("skipped", st.Skipped), zap.Int64("deleted", st.Deleted), zap.Int64("failed", st.Failed),
		zap.Int64("missing_originals", st.MissingOriginals), zap.Float64("docs_per_second", st.DocsPerSecond), zap.Error(err))
	j.cancel(nil)
}

// steps are a switch from creating to done.
func (s *Switcher) steps(ctx context.Context, j *job) error {
	base, from, to := s.cat.Base(), j.from, j.to
	next := s.cat.NextAlias()

	// creating: always through EnsureGeneration, not only cat.Open: a
	// store pinned before the index was pruned would skip the creation.
	gi, err := base.EnsureGeneration(ctx, to.Prov, to.Index(), false)
	if err != nil {
		return err
	}
	target, err := s.cat.Open(ctx, to)
	if err != nil {
		return err
	}
	source := from.Store()
	if source == nil {
		return apierr.New(apierr.Internal, "internal", "the active generation %q has no store", from.Name)
	}
	targets, err := base.AliasTargets(ctx, next)
	if err != nil {
		return err
	}
	switch cur := targets[next]; {
	case len(cur) == 0:
		if err := base.UpdateAliases(ctx, []esproxy.AliasAction{{Op: "add", Index: gi.Name, Alias: next}}); err != nil {
			return err
		}
	case len(cur) != 1 || cur[0] != gi.Name:
		return apierr.New(apierr.Conflict, CodeAliasesMoved, "alias %q points at %v meanwhile, not at %q", next, cur, gi.Name)
	}
	if _, err := s.cat.Refresh(ctx); err != nil {
		return err
	}

	// propagating: every gateway re-reads the aliases within a poll
	// interval and dual-writes from then on; copying before that could
	// miss an ingest that went to the active generation only.
	j.setState(StatePropagating)
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-time.After(s.opts.Propagation):
	}

	c := &copier{from: source, to: target, images: to.Images, texts: to.Texts, originals: s.originals,
		opts: s.opts, prog: j.prog, state: j.setState, log: s.log.With(zap.String("to", to.Name))}
	if err := c.sync(ctx); err != nil {
		return err
	}
	if err := c.verify(ctx, from.Name, to.Name); err != nil {
		return err
	}

	// cutting_over: once verified, finish it even if aborted meanwhile;
	// half-sent, nobody would know where the alias is.
	j.setState(StateCuttingOver)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := s.cutOver(cctx, from, to); err != nil {
		return err
	}
	if _, err := s.cat.Refresh(cctx); err != nil {
		s.log.Warn("re-reading the generation aliases after the cut-over failed", zap.Error(err))
	}
	return nil
}

// cutOver moves the three aliases in one atomic call: <alias> to to (its
// write index), <alias>-next off it, <alias>-previous to from. Every
// remove must find what it removes, so a cut-over computed from aliases
// that changed meanwhile fails as a whole.
func (s *Switcher) cutOver(ctx context.Context, from, to *Generation) error {
	base := s.cat.Base()
	alias, next, prev := s.cat.Alias(), s.cat.NextAlias(), s.cat.PreviousAlias()
	cur, err := base.AliasTargets(ctx, alias, next, prev)
	if err != nil {
		return err
	}
	if a := cur[alias]; len(a) != 1 || a[0] != from.Index() {
		return apierr.New(apierr.Conflict, CodeAliasesMoved, "alias %q points at %v, no longer at %q (generation %q): another switch ran; rerun this one", alias, a, from.Index(), from.Name)
	}
	if n := cur[next]; len(n) != 1 || n[0] != to.Index() {
		return apierr.New(apierr.Conflict, CodeAliasesMoved, "alias %q points at %v, not at %q: the switch was aborted elsewhere", next, n, to.Index())
	}
	actions := []esproxy.AliasAction{
		{Op: "remove", Index: from.Index(), Alias: alias, MustExist: true},
		{Op: "add", Index: to.Index(), Alias: alias, WriteIndex: true},
		{Op: "remove", Index: to.Index(), Alias: next, MustExist: true},
	}
	for _, idx := range cur[prev] {
		actions = append(actions, esproxy.AliasAction{Op: "remove", Index: idx, Alias: prev, MustExist: true})
	}
	actions = append(actions, esproxy.AliasAction{Op: "add", Index: from.Index(), Alias: prev})
	if err := base.UpdateAliases(ctx, actions); err != nil {
		return err
	}
	s.log.Info("aliases moved", zap.String("alias", alias), zap.String("to", to.Index()), zap.String("previous", from.Index()))
	return nil
}

// Status reports the generations, their roles and indices, and the switch
// this gateway runs or ran last (or one pending from elsewhere).
func (s *Switcher) Status(ctx context.Context) (*Status, error) {
	// The job first, then the aliases: a job that finishes in between
	// shows as running rather than its -next alias as interrupted.
	s.mu.Lock()
	j := s.job
	s.mu.Unlock()
	var js *SwitchStatus
	if j != nil {
		js = j.status()
	}
	v, err := s.cat.Refresh(ctx)
	if err != nil {
		return nil, err
	}
	base := s.cat.Base()
	alias, next, prev := s.cat.Alias(), s.cat.NextAlias(), s.cat.PreviousAlias()
	targets, err := base.AliasTargets(ctx, alias, next, prev)
	if err != nil {
		return nil, err
	}
	st := &Status{Alias: alias, Generations: []GenerationStatus{}}
	known := map[string]bool{}
	for _, g := range s.cat.Generations() {
		known[g.Index()] = true
		n, found, err := base.CountIndex(ctx, g.Index())
		if err != nil {
			return nil, err
		}
		if !found {
			n = -1
		}
		gs := generationStatus(g.Prov)
		gs.Name, gs.Role, gs.Index, gs.Documents, gs.Configured = g.Name, string(v.RoleOf(g)), g.Index(), n, true
		st.Generations = append(st.Generations, gs)
	}
	// Orphans: indices behind the aliases that are no configured
	// generation's (another configuration's, or made by hand).
	orphanName := map[string]string{}
	for _, a := range []string{alias, next, prev} {
		for _, idx := range targets[a] {
			if known[idx] {
				continue
			}
			known[idx] = true
			gs := GenerationStatus{Name: idx, Role: "orphan", Index: idx, Documents: -1}
			if p, found, err := base.IndexProvenance(ctx, idx); err == nil && found {
				gs = generationStatus(p)
				gs.Name, gs.Role, gs.Index = idx, "orphan", idx
				if p.Generation != "" {
					gs.Name = p.Generation
				}
			}
			if n, found, err := base.CountIndex(ctx, idx); err == nil && found {
				gs.Documents = n
			}
			orphanName[idx] = gs.Name
			st.Generations = append(st.Generations, gs)
		}
	}
	role := func(a string, g *Generation) *string {
		if g != nil {
			return &g.Name
		}
		if t := targets[a]; len(t) == 1 {
			if n, ok := orphanName[t[0]]; ok {
				return &n
			}
		}
		return nil
	}
	st.Active, st.Next, st.Previous = role(alias, v.Active), role(next, v.Next), role(prev, v.Previous)

	switch {
	case js != nil && js.Running:
		st.Switch = js
	case st.Next != nil && (js == nil || js.To != *st.Next || js.State != StateFailed):
		// -next exists and no job here explains it: restarted, or another
		// gateway runs it.
		is := &SwitchStatus{To: *st.Next, State: StateInterrupted}
		if st.Active != nil {
			is.From = *st.Active
		}
		st.Switch = is
	case js != nil:
		st.Switch = js
	}
	return st, nil
}

// generationStatus fills the provenance part of a GenerationStatus.
func generationStatus(p esproxy.Provenance) GenerationStatus {
	return GenerationStatus{
		ImageModel:  ModelRef{Name: p.Model, Version: p.Version},
		TextModel:   ModelRef{Name: p.TextModel, Version: p.TextVersion},
		Dims:        p.Dims,
		Fingerprint: FingerprintHash(p.Fingerprint),
	}
}

// FingerprintHash is a short, stable name of a model fingerprint: the first
// 8 hex digits of the SHA-256 of its float32 values (little endian); "" for
// none.
func FingerprintHash(fp []float32) string {
	if len(fp) == 0 {
		return ""
	}
	b := make([]byte, 4*len(fp))
	for i, f := range fp {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:4])
}

// switchMetrics are the switch's Prometheus series.
type switchMetrics struct {
	running   prometheus.Gauge
	documents *prometheus.CounterVec
	progress  prometheus.Gauge
	switches  *prometheus.CounterVec
}

func newSwitchMetrics(reg prometheus.Registerer) *switchMetrics {
	m := &switchMetrics{
		running: promreg.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tusou_models_switch_running",
			Help: "1 while this gateway runs a model switch.",
		})),
		documents: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusou_models_switch_documents_total",
			Help: "Documents handled by model switches: created (re-embedded), skipped (already there), deleted (gone from the active generation), failed, missing_original.",
		}, []string{"result"})),
		progress: promreg.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tusou_models_switch_progress_ratio",
			Help: "Share of the active generation's documents the current backfill pass has compared (0..1).",
		})),
		switches: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusou_models_switches_total",
			Help: "Finished model switches by outcome: done, failed or aborted.",
		}, []string{"outcome"})),
	}
	for _, r := range []string{resultCreated, resultSkipped, resultDeleted, resultFailed, resultMissing} {
		m.documents.WithLabelValues(r)
	}
	for _, o := range []string{StateDone, StateFailed, StateAborted} {
		m.switches.WithLabelValues(o)
	}
	return m
}
