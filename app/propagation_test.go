package app

import (
	"testing"
	"time"

	"github.com/tusou/tusou/config"
)

// A gateway accepts writes with a view of the aliases up to
// models.max_staleness old (its polls may fail meanwhile): until every
// such view has seen <alias>-next, some gateway writes the active
// generation only, so the switch must not copy before then.
func TestSwitchPropagationOutlastsEveryViewThatMayWrite(t *testing.T) {
	for _, m := range []config.Models{
		{PollInterval: time.Second, MaxStaleness: 15 * time.Second},
		{PollInterval: 5 * time.Second, MaxStaleness: 10 * time.Second},
		{PollInterval: 100 * time.Millisecond, MaxStaleness: 200 * time.Millisecond},
	} {
		if p := switchPropagation(m); p <= m.MaxStaleness || p < 2*m.PollInterval {
			t.Errorf("poll %s, max_staleness %s: propagation %s", m.PollInterval, m.MaxStaleness, p)
		}
	}
}
