package k8s

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

// alertScenario runs one alert's expression with Prometheus' own query
// engine over made-up series and says for which instances it fires at given
// times (the condition only: the rule manager applies `for:`).
type alertScenario struct {
	alert string
	// series in the notation of Prometheus' PromQL test scripts
	// (`name{labels} 0x9 1x30`: 0 ten times, then 1 thirty times), one
	// sample a minute from time 0.
	series []string
	// firing maps minutes since time 0 to the instances the expression
	// returns then; an empty list asserts that nothing fires.
	firing map[int][]string
}

var alertScenarios = []alertScenario{
	{
		// gw-a reads the aliases every second; gw-b stops reading at 6m (the
		// age grows by 60 s a minute) and recovers at 9m; gw-c hovers at
		// 12 s from 10m: past the threshold, under max_staleness (about to
		// refuse writes).
		alert: "TusouGenerationViewStale",
		series: []string{
			`tusou_models_view_age_seconds{instance="gw-a"} 0.5x12`,
			`tusou_models_view_age_seconds{instance="gw-b"} 1 1 1 1 1 1 61 121 181 1 1 1 1`,
			`tusou_models_view_age_seconds{instance="gw-c"} 1 1 1 1 1 1 1 1 1 1 12 12 12`,
		},
		firing: map[int][]string{5: {}, 7: {"gw-b"}, 9: {}, 11: {"gw-c"}},
	},
	{
		// gw-a's switch fails at 10m; gw-b's switches end done or aborted
		// (an operator's choice, not a failure). The alert lasts the 15m
		// window, then resolves.
		alert: "TusouModelSwitchFailed",
		series: []string{
			`tusou_models_switches_total{instance="gw-a",outcome="failed"} 0x9 1x30`,
			`tusou_models_switches_total{instance="gw-a",outcome="done"} 0x40`,
			`tusou_models_switches_total{instance="gw-b",outcome="done"} 0x4 1x4 2x30`,
			`tusou_models_switches_total{instance="gw-b",outcome="aborted"} 0x19 1x20`,
			`tusou_models_switches_total{instance="gw-b",outcome="failed"} 0x40`,
		},
		firing: map[int][]string{9: {}, 12: {"gw-a"}, 22: {"gw-a"}, 35: {}},
	},
	{
		// gw-a runs a switch from 6m whose progress stops at 8m; gw-b's
		// switch progresses steadily; gw-c starts a switch at 20m that never
		// moves (at 30m too recent to tell, at 36m stalled); gw-d finished
		// its switch (running 0, progress left at 1).
		alert: "TusouModelSwitchStalled",
		series: []string{
			`tusou_models_switch_running{instance="gw-a"} 0x5 1x40`,
			`tusou_models_switch_progress_ratio{instance="gw-a"} 0x5 0.1 0.2 0.3x38`,
			`tusou_models_switch_running{instance="gw-b"} 1x45`,
			`tusou_models_switch_progress_ratio{instance="gw-b"} 0+0.02x45`,
			`tusou_models_switch_running{instance="gw-c"} 0x19 1x26`,
			`tusou_models_switch_progress_ratio{instance="gw-c"} 0x45`,
			`tusou_models_switch_running{instance="gw-d"} 0x45`,
			`tusou_models_switch_progress_ratio{instance="gw-d"} 1x45`,
		},
		firing: map[int][]string{18: {}, 30: {"gw-a"}, 36: {"gw-a", "gw-c"}},
	},
}

// TestAlertExpressions: the switch alerts fire for the pods they are about,
// and stay silent for healthy pods and neighbours (a finished or aborted
// switch, a switch that just started, a view age that recovered).
func TestAlertExpressions(t *testing.T) {
	rules := alertRules(t)
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	t0 := time.Unix(0, 0).UTC()
	for _, sc := range alertScenarios {
		t.Run(sc.alert, func(t *testing.T) {
			i := slices.IndexFunc(rules, func(r rulefmt.Rule) bool { return r.Alert == sc.alert })
			if i < 0 {
				t.Fatalf("no alert %s in %s", sc.alert, alertsSource)
			}
			db := loadSeries(t, t0, sc.series)
			minutes := make([]int, 0, len(sc.firing))
			for m := range sc.firing {
				minutes = append(minutes, m)
			}
			slices.Sort(minutes)
			for _, m := range minutes {
				q, err := engine.NewInstantQuery(t.Context(), db, nil, rules[i].Expr, t0.Add(time.Duration(m)*time.Minute))
				if err != nil {
					t.Fatal(err)
				}
				res := q.Exec(t.Context())
				if res.Err != nil {
					t.Fatalf("at %dm: %v", m, res.Err)
				}
				vec, err := res.Vector()
				if err != nil {
					t.Fatalf("at %dm: %v", m, err)
				}
				var got []string
				for _, s := range vec {
					got = append(got, s.Metric.Get("instance"))
				}
				slices.Sort(got)
				if want := sc.firing[m]; !slices.Equal(got, want) {
					t.Errorf("at %dm fires for %q, want %q", m, got, want)
				}
				q.Close()
			}
		})
	}
}

// loadSeries turns test-script series into an in-memory store, one sample a
// minute from t0 (the promqltest package would do this, but its storage
// drags the whole Prometheus server, cloud SDKs included, into this module).
func loadSeries(t *testing.T, t0 time.Time, descs []string) storage.Queryable {
	t.Helper()
	var db memSeries
	for _, d := range descs {
		lset, vals, err := promqlParser.ParseSeriesDesc(d)
		if err != nil {
			t.Fatalf("series %q: %v", d, err)
		}
		var samples []chunks.Sample
		for i, v := range vals {
			if !v.Omitted {
				samples = append(samples, floatSample{t: t0.Add(time.Duration(i) * time.Minute).UnixMilli(), f: v.Value})
			}
		}
		db = append(db, storage.NewListSeries(lset, samples))
	}
	return db
}

// memSeries is a storage.Queryable and storage.Querier over a few series.
type memSeries []storage.Series

func (db memSeries) Querier(_, _ int64) (storage.Querier, error) { return db, nil }

func (db memSeries) Select(_ context.Context, _ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	var out []storage.Series
	for _, s := range db {
		if matchAll(s.Labels(), ms) {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
	return &seriesList{list: out, i: -1}
}

func matchAll(l labels.Labels, ms []*labels.Matcher) bool {
	for _, m := range ms {
		if !m.Matches(l.Get(m.Name)) {
			return false
		}
	}
	return true
}

func (memSeries) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (memSeries) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (memSeries) Close() error { return nil }

// seriesList is a storage.SeriesSet over a slice.
type seriesList struct {
	list []storage.Series
	i    int
}

func (s *seriesList) Next() bool                      { s.i++; return s.i < len(s.list) }
func (s *seriesList) At() storage.Series              { return s.list[s.i] }
func (*seriesList) Err() error                        { return nil }
func (*seriesList) Warnings() annotations.Annotations { return nil }

// floatSample is a chunks.Sample holding a float.
type floatSample struct {
	t int64
	f float64
}

func (s floatSample) T() int64                    { return s.t }
func (floatSample) ST() int64                     { return 0 }
func (s floatSample) F() float64                  { return s.f }
func (floatSample) H() *histogram.Histogram       { return nil }
func (floatSample) FH() *histogram.FloatHistogram { return nil }
func (floatSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s floatSample) Copy() chunks.Sample         { return s }
