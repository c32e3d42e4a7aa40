package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/tusou/tusou/apierr"
)

// Resolver resolves host names; *net.Resolver implements it. Tests inject
// one that maps test host names to a local server.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// fetcher downloads images for image_url fields without becoming a
// server-side request forgery tool: only allow-listed schemes and hosts,
// every resolved address must be public (all of them, so DNS answers mixing
// a public and an internal address are refused), the connection goes to the
// address that was checked (no second lookup an attacker's DNS could
// answer differently), every redirect is checked the same way, no proxy
// from the environment, and size and time limits.
type fetcher struct {
	cfg      URLFetch
	resolver Resolver
	client   *http.Client
	// allowLoopback lets tests fetch from an httptest server on 127.0.0.1.
	// Only tests set it; no configuration reaches it.
	allowLoopback bool
}

func newFetcher(cfg URLFetch, resolver Resolver) *fetcher {
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	f := &fetcher{cfg: cfg, resolver: resolver}
	dialer := &net.Dialer{
		Timeout: cfg.Timeout,
		// Belt and braces: whatever address the dialer is about to connect
		// to is checked once more at the socket.
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return err
			}
			return f.checkAddr(ap.Addr())
		},
	}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := f.resolve(ctx, host)
			if err != nil {
				return nil, err
			}
			var lastErr error
			for _, ip := range ips {
				c, err := dialer.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
				if err == nil {
					return c, nil
				}
				lastErr = err
			}
			return nil, lastErr
		},
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
		MaxIdleConns:          16,
		IdleConnTimeout:       30 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	f.client = &http.Client{
		Transport: tr,
		Timeout:   cfg.Timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > cfg.MaxRedirects {
				return errRefused("too many redirects (url_fetch.max_redirects is %d)", cfg.MaxRedirects)
			}
			return f.checkURL(req.URL)
		},
	}
	return f
}

func errRefused(format string, args ...any) *apierr.Error {
	return apierr.New(apierr.InvalidArgument, "image_url_refused", format, args...)
}

// resolve returns the addresses of host, refusing all of them when any one
// is not public.
func (f *fetcher) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, f.checkAddr(ip)
	}
	ips, err := f.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, apierr.Wrap(err, apierr.InvalidArgument, "image_url_unresolved", "image URL host %q does not resolve", host)
	}
	if len(ips) == 0 {
		return nil, apierr.New(apierr.InvalidArgument, "image_url_unresolved", "image URL host %q has no address", host)
	}
	for _, ip := range ips {
		if err := f.checkAddr(ip); err != nil {
			return nil, err
		}
	}
	return ips, nil
}

// Addresses that are never fetched besides what netip classifies
// (loopback, private, link-local, multicast, unspecified).
var (
	nonPublic4 = []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
		netip.MustParsePrefix("100.64.0.0/10"),   // CGNAT
		netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
		netip.MustParsePrefix("192.0.2.0/24"),    // documentation
		netip.MustParsePrefix("192.88.99.0/24"),  // 6to4 relay anycast
		netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
		netip.MustParsePrefix("198.51.100.0/24"), // documentation
		netip.MustParsePrefix("203.0.113.0/24"),  // documentation
		netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and the broadcast address
	}
	// global6 is IPv6 global unicast. Everything outside it is refused,
	// which covers every form that embeds an IPv4 address outside it:
	// IPv4-compatible ::/96, SIIT ::ffff:0:0:0/96, NAT64 64:ff9b::/96 and
	// 64:ff9b:1::/48, and also discard 100::/64, ULA, link- and site-local.
	global6    = netip.MustParsePrefix("2000::/3")
	nonPublic6 = []netip.Prefix{
		netip.MustParsePrefix("2001::/23"),     // IETF protocol assignments: Teredo (embeds IPv4), benchmarking, ORCHID
		netip.MustParsePrefix("2001:db8::/32"), // documentation
		netip.MustParsePrefix("2002::/16"),     // 6to4: embeds an IPv4 address, reached through a relay
		netip.MustParsePrefix("3fff::/20"),     // documentation
	}
)

// checkAddr refuses every address that is not plainly public.
func (f *fetcher) checkAddr(ip netip.Addr) error {
	ip = ip.Unmap()
	if ip.IsLoopback() && f.allowLoopback {
		return nil
	}
	if !publicAddr(ip) {
		return errRefused("image URL resolves to a non-public address (%s); loopback, private, link-local and reserved addresses are never fetched", ip)
	}
	return nil
}

// publicAddr reports whether ip (IPv4-mapped addresses already unmapped)
// is a public unicast address that embeds no other address.
func publicAddr(ip netip.Addr) bool {
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	if ip.Is4() {
		for _, p := range nonPublic4 {
			if p.Contains(ip) {
				return false
			}
		}
		return true
	}
	if !global6.Contains(ip) {
		return false
	}
	for _, p := range nonPublic6 {
		if p.Contains(ip) {
			return false
		}
	}
	// An ISATAP interface id (00-00-5e-fe or 02-00-5e-fe, u/g bits aside)
	// carries an IPv4 address in the low 32 bits, under any prefix.
	b := ip.As16()
	if b[8]&^0x03 == 0 && b[9] == 0 && b[10] == 0x5e && b[11] == 0xfe {
		return false
	}
	return true
}

// checkURL applies the scheme and host allow-lists.
func (f *fetcher) checkURL(u *url.URL) error {
	ok := false
	for _, s := range f.cfg.Schemes {
		ok = ok || strings.EqualFold(u.Scheme, s)
	}
	if !ok {
		return errRefused("image URL scheme %q is not allowed (url_fetch.schemes: %s)", u.Scheme, strings.Join(f.cfg.Schemes, ", "))
	}
	if u.User != nil {
		return errRefused("image URLs with user info are not fetched")
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if host == "" {
		return errRefused("image URL has no host")
	}
	for _, h := range f.cfg.Hosts {
		if h == host || (strings.HasPrefix(h, "*.") && strings.HasSuffix(host, h[1:])) {
			return nil
		}
	}
	return errRefused("image URL host %q is not in url_fetch.hosts", host)
}

// fetch downloads one image within the size and time limits.
func (f *fetcher) fetch(ctx context.Context, raw string) ([]byte, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errRefused("image URL is not a URL: %v", err)
	}
	if err := f.checkURL(u); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, errRefused("image URL: %v", err)
	}
	req.Header.Set("Accept", "image/*")
	resp, err := f.client.Do(req)
	if err != nil {
		if ae := apierr.As(err); ae != nil {
			return nil, ae
		}
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return nil, apierr.Wrap(err, apierr.InvalidArgument, "image_url_timeout", "image URL did not answer within url_fetch.timeout (%s)", f.cfg.Timeout)
		}
		return nil, apierr.Wrap(err, apierr.InvalidArgument, "image_url_failed", "image URL could not be fetched: %s", shortErr(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, apierr.New(apierr.InvalidArgument, "image_url_status", "image URL answered HTTP %d", resp.StatusCode)
	}
	if resp.ContentLength > f.cfg.MaxBytes {
		return nil, apierr.New(apierr.TooLarge, "image_url_too_large", "image URL body is %d bytes, over url_fetch.max_bytes (%d)", resp.ContentLength, f.cfg.MaxBytes)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, f.cfg.MaxBytes+1))
	if err != nil {
		return nil, apierr.Wrap(err, apierr.InvalidArgument, "image_url_failed", "image URL body could not be read: %s", shortErr(err))
	}
	if int64(len(data)) > f.cfg.MaxBytes {
		return nil, apierr.New(apierr.TooLarge, "image_url_too_large", "image URL body is over url_fetch.max_bytes (%d)", f.cfg.MaxBytes)
	}
	return data, nil
}

// shortErr strips Go's "Get \"url\": " prefix chain down to the cause.
func shortErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Sprint(err)
}

func (f *fetcher) close() { f.client.CloseIdleConnections() }
