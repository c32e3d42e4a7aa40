package triton

import "testing"

// TestBusyPoolKeepsBuffersOnlyWhileBatchesOverlap: a buffer is reused by a
// batch that starts while another is in flight, and dropped when the last
// in-flight batch ends, so an idle gateway pins no request tensors.
func TestBusyPoolKeepsBuffersOnlyWhileBatchesOverlap(t *testing.T) {
	var p busyPool
	a := p.get(100)
	b := p.get(50) // two batches in flight
	p.put(a)       // b still in flight: a is kept
	if len(p.free) != 1 {
		t.Fatalf("free %d, want a kept while b is in flight", len(p.free))
	}
	c := p.get(80) // reuses a
	if &c[0] != &a[0] || len(c) != 80 {
		t.Fatalf("get(80) did not reuse the 100-byte buffer")
	}
	p.put(b)
	p.put(c) // the last batch ended: nothing is kept
	if len(p.free) != 0 || p.users != 0 {
		t.Fatalf("idle pool keeps %d buffers (users %d), want none", len(p.free), p.users)
	}
	if d := p.get(200); len(d) != 200 {
		t.Fatalf("get(200) returned %d bytes", len(d))
	}
}
