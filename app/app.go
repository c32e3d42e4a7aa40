// Package app wires tusou's components together and runs the gateway until
// its context ends, then shuts down in order: stop accepting requests, drain
// in-flight requests, drain the Triton batchers, close the clients.
package app

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tusou/tusou/admission"
	"github.com/tusou/tusou/apierr"
	"github.com/tusou/tusou/blobstore"
	"github.com/tusou/tusou/config"
	"github.com/tusou/tusou/embed"
	"github.com/tusou/tusou/esproxy"
	"github.com/tusou/tusou/esproxy/sidecar"
	"github.com/tusou/tusou/gateway"
	"github.com/tusou/tusou/internal/promreg"
	"github.com/tusou/tusou/models"
	"github.com/tusou/tusou/preprocess"
	"github.com/tusou/tusou/service"
	"github.com/tusou/tusou/thumbnail"
	"github.com/tusou/tusou/tokenizer"
	"github.com/tusou/tusou/triton"
	"github.com/tusou/tusou/triton/inferencepb"
)

// NewLogger builds the zap logger the configuration asks for.
func NewLogger(cfg config.Log) (*zap.Logger, error) {
	var zc zap.Config
	if cfg.Format == "console" {
		zc = zap.NewDevelopmentConfig()
	} else {
		zc = zap.NewProductionConfig()
		zc.EncoderConfig.TimeKey = "time"
		zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	}
	lvl, err := zapcore.ParseLevel(cfg.Level)
	if err != nil {
		return nil, err
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	return zc.Build()
}

// Run starts the gateway and blocks until ctx ends and shutdown finishes.
// The listener opens first, answering /healthz while the dependencies are
// awaited (Triton may still be loading models), so an orchestrator's
// liveness probe does not kill a gateway that is only waiting; everything
// else answers 503 "starting" until the gateway is built.
func Run(ctx context.Context, cfg *config.Config, version string) error {
	log, err := NewLogger(cfg.Log)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // stderr sync errors are not actionable
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("server.listen: %w", err)
	}
	var sln net.Listener
	if cfg.Sidecar.Enabled {
		if sln, err = net.Listen("tcp", cfg.Sidecar.Listen); err != nil {
			ln.Close()
			return fmt.Errorf("sidecar.listen: %w", err)
		}
	}
	var dln net.Listener
	if cfg.Server.DebugListen != "" {
		if dln, err = net.Listen("tcp", cfg.Server.DebugListen); err != nil {
			ln.Close()
			if sln != nil {
				sln.Close()
			}
			return fmt.Errorf("server.debug_listen: %w", err)
		}
	}
	setMemoryLimit(cfg.Server.MemoryBudgetBytes, log)
	var api, es swapHandler
	api.Store(startingHandler{})
	es.Store(startingHandler{})
	srvs := startServers(cfg, log, []listener{{ln, &api, "http"}, {sln, &es, "sidecar"}, {dln, debugHandler(), "debug"}})
	a, err := Build(ctx, cfg, log, version)
	if err != nil {
		srvs.close()
		return err
	}
	api.Store(a.Handler)
	if a.SidecarHandler != nil {
		es.Store(a.SidecarHandler)
	}
	log.Info("ready")
	return a.waitAndShutdown(ctx, srvs)
}

// heapHeadroom is the Go heap beyond the memory budget that the soft limit
// allows: what a gateway holds at rest (~50 MB: tokenizer, clients, pools)
// plus room for the garbage of released requests, so the GC runs more often
// under load instead of letting the heap double.
const heapHeadroom = 128 << 20

// setMemoryLimit derives the Go runtime's soft memory limit from the budget,
// unless the operator set GOMEMLIMIT. Without it the heap may grow to twice
// the live bytes before a collection, so a budget of in-flight bytes alone
// would not bound the resident size.
func setMemoryLimit(budget int64, log *zap.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit := budget + heapHeadroom
	debug.SetMemoryLimit(limit)
	log.Info("Go memory limit set from server.memory_budget_bytes", zap.Int64("bytes", limit))
}

// debugHandler serves Go's profiles (server.debug_listen). `?gc=1` on
// /debug/pprof/heap runs a collection first, so the profile shows live bytes.
func debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// swapHandler lets Run replace the start-up handler with the gateway.
type swapHandler struct{ p atomic.Pointer[http.Handler] }

func (s *swapHandler) Store(h http.Handler) { s.p.Store(&h) }
func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.p.Load()).ServeHTTP(w, r)
}

// startingHandler answers while the gateway waits for its dependencies.
type startingHandler struct{}

func (startingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path == "/healthz" {
		w.Write([]byte(`{"status":"ok"}`))
		return
	}
	w.Header().Set("Retry-After", "5")
	w.WriteHeader(http.StatusServiceUnavailable)
	w.Write([]byte(`{"error":{"code":"starting","message":"the gateway is starting: waiting for Triton and Elasticsearch"}}`))
}

// App is a built gateway: every component constructed and checked.
type App struct {
	cfg      *config.Config
	log      *zap.Logger
	Registry *prometheus.Registry
	Handler  http.Handler
	// SidecarHandler is the Elasticsearch-compatible API (nil when disabled).
	SidecarHandler http.Handler
	sidecar        *sidecar.Sidecar
	triton         *triton.Client
	images         []*triton.ImageEncoder
	texts          []*triton.TextEncoder
	es             *esproxy.Client
	catalog        *models.Catalog
	switcher       *models.Switcher
	// stopCatalog ends the catalog's polling; catalogDone closes when it has.
	stopCatalog context.CancelFunc
	catalogDone chan struct{}
}

// Build constructs every component, waits for Triton and Elasticsearch to be
// reachable (they may start after the gateway), checks the models against
// the configuration and the index against the model, and returns the app.
// Mismatches are fatal: serving vectors from the wrong model is worse than
// not serving.
func Build(ctx context.Context, cfg *config.Config, log *zap.Logger, version string) (*App, error) {
	reg := prometheus.NewRegistry()
	promreg.All(reg, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tusou_build_info", Help: "Always 1; the version label says which build runs.",
			ConstLabels: prometheus.Labels{"version": version},
		}, func() float64 { return 1 }))

	pre, err := preprocess.New(cfg.Preprocess)
	if err != nil {
		return nil, fmt.Errorf("preprocess: %w", err)
	}
	gcfgs := cfg.ResolvedGenerations()
	toks := make([]*tokenizer.Tokenizer, len(gcfgs))
	for i := range gcfgs {
		g := &gcfgs[i]
		if toks[i], err = loadTokenizer(g, len(cfg.Models.Generations) == 0, log); err != nil {
			return nil, err
		}
		// The pad id is a fact of the tokenizer file, not a separate setting
		// that could disagree with it.
		g.Text.PadID = toks[i].PadID()
	}

	tc, err := triton.Dial(ctx, cfg.Triton, log, reg)
	if err != nil {
		return nil, fmt.Errorf("triton: %w", err)
	}
	a := &App{cfg: cfg, log: log, Registry: reg, triton: tc}
	ok := false
	defer func() {
		if !ok {
			a.close(context.Background())
		}
	}()
	if err := tc.WaitReady(ctx, 2*time.Second); err != nil {
		return nil, err
	}
	var imageModels []triton.ImageModelConfig
	var textModels []triton.TextModelConfig
	for _, g := range gcfgs {
		imageModels, textModels = append(imageModels, g.Image), append(textModels, g.Text)
	}
	if err := tc.CheckModelsFor(ctx, imageModels, textModels); err != nil {
		return nil, fmt.Errorf("triton models do not match the configuration: %w", err)
	}

	es, err := esproxy.New(cfg.Elasticsearch, log, reg)
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: %w", err)
	}
	a.es = es

	var blobs service.Blobs
	store, err := blobstore.New(ctx, cfg.Blobs.Backend, cfg.Blobs.Dir, cfg.Blobs.S3)
	if err != nil {
		return nil, err
	}
	if store != nil { // nil: blobs.dir is empty, originals are not kept
		blobs = store
	}

	refusals := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tusou_preprocess_refusals_total",
		Help: "Images refused because every decode worker was busy and the wait queue was full.",
	})
	workers := cfg.Decode.Workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	limiter := embed.NewLimiter(workers, cfg.Decode.QueueSize, refusals.Inc)
	promreg.All(reg, refusals, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tusou_preprocess_waiting",
		Help: "Images waiting for a decode worker.",
	}, func() float64 { return float64(limiter.Waiting()) }))
	// One budget for the bytes that requests hold, whichever listener they
	// came in on: bodies (gateway, sidecar) and images being decoded.
	budget := admission.New(cfg.Server.MemoryBudgetBytes, time.Second, reg)

	// Every generation gets its encoders; all share one decode pool, one
	// budget and one Triton connection, so the native API, the sidecar and
	// a switch's backfill batch together.
	gens := make([]*models.Generation, len(gcfgs))
	for i, g := range gcfgs {
		gpre, err := preprocess.New(g.Preprocess)
		if err != nil {
			return nil, fmt.Errorf("generation %q preprocess: %w", g.Name, err)
		}
		ienc := triton.NewImageEncoderFor(tc, g.Image)
		tenc := triton.NewTextEncoderFor(tc, g.Text)
		a.images, a.texts = append(a.images, ienc), append(a.texts, tenc)
		prov, err := provenance(ctx, tc, g, ienc)
		if err != nil {
			return nil, err
		}
		imageEmb := embed.NewImages(gpre, ienc, gpre.TensorLen(), limiter)
		imageEmb.UseBudget(budget)
		gens[i] = models.NewGeneration(g.Name, imageEmb, embed.NewTexts(toks[i], tenc), prov, cfg.Elasticsearch.Index)
		log.Info("generation", zap.String("name", g.Name), zap.Stringer("provenance", prov), zap.String("index", gens[i].Index()))
	}
	cat := models.NewCatalog(es, gens, models.CatalogOptions{PollInterval: cfg.Models.PollInterval, MaxStaleness: cfg.Models.MaxStaleness}, log.Named("models"), reg)
	a.catalog = cat
	if err := startCatalog(ctx, cat, cfg.InitialGeneration(), log); err != nil {
		return nil, err
	}
	a.runCatalog()
	v := cat.View()
	log.Info("index ready", zap.String("alias", cat.Alias()), zap.String("active", v.Active.Name),
		zap.String("index", v.Active.Index()), zap.String("next", nameOrEmpty(v.Next)))

	var originals models.Originals
	if blobs != nil {
		originals = blobs
	}
	a.switcher = models.NewSwitcher(cat, originals, models.SwitchOptions{
		Workers: cfg.Models.Backfill.Workers, PageSize: cfg.Models.Backfill.PageSize, MaxErrors: cfg.Models.Backfill.MaxErrors,
		Propagation:      switchPropagation(cfg.Models),
		MaxOriginalBytes: cfg.Preprocess.MaxBytes,
		Budget:           budget,
	}, log.Named("models"), reg)
	svc := service.New(targets{cat}, blobs)
	if cfg.Sidecar.Enabled {
		// The sidecar writes to its clients' own indices, which no switch
		// backfills: it keeps the initial generation's encoders for life,
		// so those indices never mix two models' vectors.
		sg := cat.Generation(cfg.InitialGeneration())
		sc, err := sidecar.New(cfg.Sidecar, cfg.Elasticsearch, sg.Images, sg.Texts, log.Named("sidecar"), reg)
		if err != nil {
			return nil, fmt.Errorf("sidecar: %w", err)
		}
		sc.UseBudget(budget)
		a.sidecar = sc
		a.SidecarHandler = sc
	}
	a.Handler = gateway.New(gateway.Deps{
		Config: cfg, Service: svc, Logger: log, Registry: reg, Gatherer: reg, Budget: budget, Models: a.switcher,
		// Thumbnails share the decode workers with ingest: both are CPU-bound.
		Thumbnails: thumbnail.New(svc, pre, limiter, cfg.Preprocess.MaxBytes, thumbnail.DefaultCacheBytes),
		Checks: []gateway.Check{
			{Name: "elasticsearch", Ready: es.Ready},
			{Name: "triton", Ready: tc.Ready, Replicas: tc.Replicas},
			{Name: "models", Ready: cat.Ready},
		},
	})
	ok = true
	return a, nil
}

// ServeListener serves the built REST API on ln until ctx ends, then shuts
// down gracefully (tests use it with a :0 listener).
func (a *App) ServeListener(ctx context.Context, ln net.Listener) error {
	return a.ServeListeners(ctx, ln, nil)
}

// ServeListeners serves the REST API on ln and, when sln is not nil, the
// Elasticsearch-compatible sidecar on sln.
func (a *App) ServeListeners(ctx context.Context, ln, sln net.Listener) error {
	ls := []listener{{ln, a.Handler, "http"}}
	if sln != nil && a.SidecarHandler != nil {
		ls = append(ls, listener{sln, a.SidecarHandler, "sidecar"})
	}
	return a.waitAndShutdown(ctx, startServers(a.cfg, a.log, ls))
}

type listener struct {
	ln   net.Listener // nil: not served
	h    http.Handler
	name string
}

// servers are the running HTTP servers and the channel their Serve calls
// return on.
type servers struct {
	list []*http.Server
	errc chan error
}

func startServers(cfg *config.Config, log *zap.Logger, ls []listener) *servers {
	s := &servers{errc: make(chan error, len(ls))}
	for _, l := range ls {
		if l.ln == nil {
			continue
		}
		read, write := cfg.Server.ReadTimeout, cfg.Server.WriteTimeout
		if l.name == "sidecar" {
			// A 100 MB bulk may take the whole request deadline to arrive; the
			// write deadline leaves room to send the timeout answer.
			read, write = cfg.Sidecar.RequestTimeout, cfg.Sidecar.RequestTimeout+5*time.Second
		}
		srv := &http.Server{
			Handler:           l.h,
			ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout,
			ReadTimeout:       read,
			WriteTimeout:      write,
			IdleTimeout:       cfg.Server.IdleTimeout,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          zap.NewStdLog(log.Named(l.name)),
		}
		s.list = append(s.list, srv)
		log.Info("listening", zap.String("listener", l.name), zap.String("addr", l.ln.Addr().String()))
		go func() { s.errc <- srv.Serve(l.ln) }()
	}
	return s
}

// close stops the servers at once (start-up failed).
func (s *servers) close() {
	for _, srv := range s.list {
		srv.Close()
	}
	for range s.list {
		<-s.errc
	}
}

// waitAndShutdown waits for ctx to end (or a server to fail), then stops
// accepting, drains in-flight requests on every listener, drains the
// batchers and closes the clients, all within server.shutdown_timeout.
func (a *App) waitAndShutdown(ctx context.Context, s *servers) error {
	pending := len(s.list)
	var serveErr error
	select {
	case serveErr = <-s.errc: // one listener died: stop the others too
		pending--
	case <-ctx.Done():
	}
	timeout := a.cfg.Server.ShutdownTimeout
	a.log.Info("shutting down: draining in-flight requests", zap.Duration("timeout", timeout))
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	shutErrs := make([]error, len(s.list))
	var wg sync.WaitGroup
	for i, srv := range s.list {
		wg.Add(1)
		go func() { defer wg.Done(); shutErrs[i] = srv.Shutdown(sctx) }()
	}
	wg.Wait()
	for ; pending > 0; pending-- {
		<-s.errc // http.ErrServerClosed
	}
	a.close(sctx)
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	if err := errors.Join(shutErrs...); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	a.log.Info("stopped")
	return nil
}

// close drains the batchers, then closes the clients.
func (a *App) close(ctx context.Context) {
	if a.sidecar != nil {
		a.sidecar.Close()
	}
	if a.switcher != nil {
		// A switch in progress stops here; rerunning it resumes.
		if err := a.switcher.Close(ctx); err != nil {
			a.log.Warn("model switch did not stop", zap.Error(err))
		}
	}
	if a.stopCatalog != nil {
		a.stopCatalog()
		<-a.catalogDone
	}
	for _, e := range a.images {
		if err := e.Close(ctx); err != nil {
			a.log.Warn("image batcher did not drain", zap.Error(err))
		}
	}
	for _, e := range a.texts {
		if err := e.Close(ctx); err != nil {
			a.log.Warn("text batcher did not drain", zap.Error(err))
		}
	}
	if a.catalog != nil {
		a.catalog.Close(ctx)
	}
	if a.triton != nil {
		_ = a.triton.Close()
	}
	if a.es != nil {
		_ = a.es.Close(ctx)
	}
}

// startCatalog reads the generation aliases (creating the initial
// generation's index on an empty cluster), retrying while Elasticsearch is
// unreachable (it may be starting) and failing at once on a mismatch.
func startCatalog(ctx context.Context, cat *models.Catalog, initial string, log *zap.Logger) error {
	for attempt := 1; ; attempt++ {
		err := cat.Start(ctx, initial)
		if err == nil {
			return nil
		}
		if !retryable(err) {
			return fmt.Errorf("elasticsearch index: %w", err)
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Info("waiting for Elasticsearch", zap.Int("attempt", attempt), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("elasticsearch not reachable: %w", err)
		case <-time.After(2 * time.Second):
		}
	}
}

// runCatalog polls the generation aliases until close.
func (a *App) runCatalog() {
	ctx, cancel := context.WithCancel(context.Background())
	a.stopCatalog, a.catalogDone = cancel, make(chan struct{})
	go func() {
		defer close(a.catalogDone)
		a.catalog.Run(ctx)
	}()
}

// switchPropagation is how long a switch waits after adding <alias>-next
// before it copies: until every gateway that may still write dual-writes. A
// gateway writes with a view of the aliases up to models.max_staleness old
// (its polls may fail meanwhile), so two polls are not enough.
func switchPropagation(m config.Models) time.Duration {
	return max(2*m.PollInterval, m.MaxStaleness+m.PollInterval) + time.Second
}

// targets adapts the catalog to what the service asks of generations.
type targets struct{ cat *models.Catalog }

func target(g *models.Generation) service.Target {
	return service.Target{Name: g.Name, Images: g.Images, Texts: g.Texts, Store: g.Store()}
}

func (t targets) Reader() (service.Target, error) {
	g, err := t.cat.Reader()
	if err != nil {
		return service.Target{}, err
	}
	return target(g), nil
}

func (t targets) Writers() (service.Target, *service.Target, error) {
	active, next, err := t.cat.Writers()
	if err != nil {
		return service.Target{}, nil, err
	}
	if next == nil {
		return target(active), nil, nil
	}
	n := target(next)
	return target(active), &n, nil
}

func nameOrEmpty(g *models.Generation) string {
	if g == nil {
		return ""
	}
	return g.Name
}

// provenance is what a generation's index records about its models: the
// versions Triton serves and the image model's fingerprint.
func provenance(ctx context.Context, tc *triton.Client, g config.ResolvedGeneration, enc *triton.ImageEncoder) (esproxy.Provenance, error) {
	iv, err := servedVersion(ctx, tc, g.Image.ModelConfig)
	if err != nil {
		return esproxy.Provenance{}, err
	}
	tv, err := servedVersion(ctx, tc, g.Text.ModelConfig)
	if err != nil {
		return esproxy.Provenance{}, err
	}
	fp, err := modelFingerprint(ctx, enc)
	if err != nil {
		return esproxy.Provenance{}, fmt.Errorf("triton: embedding the provenance probe of generation %q: %w", g.Name, err)
	}
	return esproxy.Provenance{Model: g.Image.Name, Version: iv, Dims: g.Image.Dims, Fingerprint: fp,
		Generation: g.Name, TextModel: g.Text.Name, TextVersion: tv}, nil
}

// loadTokenizer loads a generation's tokenizer. Only the one generation of
// a configuration without generations may use the documented default place.
func loadTokenizer(g *config.ResolvedGeneration, implicit bool, log *zap.Logger) (*tokenizer.Tokenizer, error) {
	path := g.TokenizerPath
	setting := fmt.Sprintf("models.generations[%s].tokenizer_path", g.Name)
	if implicit {
		setting = "text.tokenizer_path"
		var err error
		if path, err = resolveTokenizer(path); err != nil {
			return nil, err
		}
	}
	if path == "" {
		return nil, fmt.Errorf("%s: generation %q names no tokenizer (nor does text.tokenizer_path): set the tokenizer.json of its text model; there is no fallback, since another model's tokenizer turns every query into nonsense ids without an error", setting, g.Name)
	}
	tok, err := tokenizer.Load(path, g.Text.MaxSeqLen)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", setting, err)
	}
	log.Info("tokenizer loaded", zap.String("generation", g.Name), zap.String("path", path), zap.Int("vocab", tok.VocabSize()))
	return tok, nil
}

// servedVersion is the model version Triton serves for m: the configured one,
// or the highest version Triton reports.
func servedVersion(ctx context.Context, tc *triton.Client, m triton.ModelConfig) (string, error) {
	if m.Version != "" {
		return m.Version, nil
	}
	md, err := tc.RPC().ModelMetadata(ctx, &inferencepb.ModelMetadataRequest{Name: m.Name})
	if err != nil {
		return "", fmt.Errorf("triton model metadata for %s: %w", m.Name, err)
	}
	vs := md.GetVersions()
	if len(vs) == 0 {
		return "1", nil
	}
	sort.Slice(vs, func(i, j int) bool {
		a, _ := strconv.Atoi(vs[i])
		b, _ := strconv.Atoi(vs[j])
		return a < b
	})
	return vs[len(vs)-1], nil
}

// modelFingerprint embeds a fixed synthetic probe tensor. Stored with the
// index, it tells apart two models that share a name and version (the tiny
// test model and the real export are both clip_image version 1).
func modelFingerprint(ctx context.Context, enc *triton.ImageEncoder) ([]float32, error) {
	probe := make([]float32, enc.TensorLen())
	for i := range probe {
		// A smooth, deterministic pattern in CLIP's normalised input range.
		probe[i] = float32(1.5 * math.Sin(float64(i)*0.0007) * math.Cos(float64(i%224)*0.05))
	}
	vec, err := enc.Embed(ctx, probe)
	if err != nil {
		return nil, err
	}
	if err := embed.Normalize(vec); err != nil {
		return nil, err
	}
	// Four decimals are plenty to tell models apart and keep _meta small.
	for i, v := range vec {
		vec[i] = float32(math.Round(float64(v)*1e4) / 1e4)
	}
	return vec, nil
}

// resolveTokenizer picks the configured tokenizer, else the exported real
// one at its documented place. There is no further fallback: the tiny test
// tokenizer with a production model would turn every text query into
// nonsense ids without an error anywhere.
func resolveTokenizer(configured string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	p := filepath.Join("model_repository", "clip_text", "tokenizer.json")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("text.tokenizer_path is empty and %s does not exist: set text.tokenizer_path to the tokenizer.json of the clip_text model Triton serves (the local stack's tiny models: model_repository/tiny/clip_text/tokenizer.json)", p)
	}
	return p, nil
}

func retryable(err error) bool {
	if e := apierr.As(err); e != nil && (e.Code == esproxy.CodeCredentials || e.Code == esproxy.CodeTLS) {
		return false // configuration errors: waiting does not fix them
	}
	switch apierr.KindOf(err) {
	case apierr.Unavailable, apierr.Timeout, apierr.BadGateway, apierr.Overloaded:
		return true
	}
	return false
}
