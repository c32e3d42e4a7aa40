package triton

import (
	"sync"
	"time"

	"google.golang.org/grpc/resolver"
)

// dnsRefresh is how often a dns:/// target is resolved again. grpc-go's DNS
// resolver only re-resolves when a connection fails, so new Triton pods
// (scale-out) would not get traffic until then; 30s is also grpc-go's
// minimum re-resolution interval.
const dnsRefresh = 30 * time.Second

// refreshingDNS wraps grpc-go's dns resolver builder so that every resolver
// it builds re-resolves every interval.
type refreshingDNS struct {
	resolver.Builder
	every time.Duration
}

func newRefreshingDNS(every time.Duration) resolver.Builder {
	return refreshingDNS{Builder: resolver.Get("dns"), every: every}
}

func (b refreshingDNS) Build(t resolver.Target, cc resolver.ClientConn, o resolver.BuildOptions) (resolver.Resolver, error) {
	r, err := b.Builder.Build(t, cc, o)
	if err != nil {
		return nil, err
	}
	rr := &refreshingResolver{Resolver: r, stop: make(chan struct{})}
	// Owned by the resolver: Close (called by the ClientConn) stops it.
	go rr.loop(b.every)
	return rr, nil
}

type refreshingResolver struct {
	resolver.Resolver
	stop chan struct{}
	once sync.Once
}

func (r *refreshingResolver) loop(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.Resolver.ResolveNow(resolver.ResolveNowOptions{})
		}
	}
}

func (r *refreshingResolver) Close() {
	r.once.Do(func() { close(r.stop) })
	r.Resolver.Close()
}
