package promreg

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterReusesIdenticalCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	newCounter := func() prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "t_total", Help: "h"})
	}
	a := Register(reg, newCounter())
	b := Register(reg, newCounter())
	b.Inc()
	if a != b {
		t.Fatal("second registration did not return the first collector")
	}
	if got := testCount(t, reg); got != 1 {
		t.Fatalf("t_total = %v, want 1 (one shared series)", got)
	}
}

func TestRegisterPanicsOnConflictingShape(t *testing.T) {
	reg := prometheus.NewRegistry()
	Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "t_total", Help: "h"}))
	defer func() {
		if recover() == nil {
			t.Fatal("a gauge under a counter's name registered without a panic")
		}
	}()
	Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: "t_total", Help: "other"}))
}

func TestRegisterNilRegistry(t *testing.T) {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "t_total", Help: "h"})
	if Register(nil, c) != c {
		t.Fatal("nil registry must return the collector itself")
	}
	All(nil, c)
}

func testCount(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "t_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("t_total not gathered")
	return 0
}
