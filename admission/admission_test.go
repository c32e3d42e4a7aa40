package admission

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tusou/tusou/apierr"
)

func TestLeases(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := New(100, 3*time.Second, reg)
	l1, err := b.Reserve("request_body", 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Reserve("request_body", 41); apierr.KindOf(err) != apierr.Overloaded ||
		apierr.As(err).Code != CodeOverBudget || apierr.As(err).RetryAfter != 3*time.Second {
		t.Fatalf("over budget: want Overloaded %s with Retry-After, got %v", CodeOverBudget, err)
	}
	l2, err := b.Reserve("request_body", 0) // unknown length: grows as it is read
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.Cover(40); err != nil || b.InUse() != 100 {
		t.Fatalf("Cover(40): %v, in use %d", err, b.InUse())
	}
	if err := l2.Cover(41); apierr.KindOf(err) != apierr.Overloaded || l2.Held() != 40 {
		t.Fatalf("Cover past the budget: %v, held %d (want Overloaded, 40 kept)", err, l2.Held())
	}
	if err := l2.Cover(10); err != nil || l2.Held() != 40 {
		t.Fatalf("Cover below what is held must not shrink: %v, %d", err, l2.Held())
	}
	l1.Release()
	l1.Release() // twice is harmless
	l2.Release()
	if b.InUse() != 0 {
		t.Fatalf("in use %d after every release", b.InUse())
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	refusals := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "tusou_memory_budget_refusals_total" {
			refusals = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if refusals != 2 {
		t.Fatalf("tusou_memory_budget_refusals_total %v, want 2", refusals)
	}
}

func TestTryAcquireNeverOvercommits(t *testing.T) {
	b := New(1000, time.Second, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := int64(0)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				if b.TryAcquire(7) {
					mu.Lock()
					got += 7
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if got > 1000 || got != b.InUse() || got < 1000-7 {
		t.Fatalf("acquired %d, in use %d, limit 1000", got, b.InUse())
	}
}
