// Package promreg is the one way tusou's components register their
// Prometheus collectors: each takes a Registerer (never the global one), and
// a collector already registered under the same description is reused, so
// two instances of a component in one process (tusou tune's sweeps, tests
// that build several clients on one registry) share their series instead of
// failing. Any other registration error means two metrics disagree on a
// name's labels or type: a programming error, so it panics at start-up.
package promreg

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c with reg and returns the collector to use from now
// on: c itself, or the identical collector registered before. A nil reg
// registers nothing and returns c.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}

// All registers collectors whose handles the caller does not keep (gauge
// functions, runtime collectors), with Register's rules.
func All(reg prometheus.Registerer, cs ...prometheus.Collector) {
	for _, c := range cs {
		Register(reg, c)
	}
}
