// Package ui is the search page: static files embedded in the binary (no CDN,
// no external fonts, no build step), served under /ui/ with a restrictive
// Content Security Policy. The page talks to the /v1 API with fetch(); it
// holds no secrets of its own (an API key, when needed, is typed by the user
// and kept in sessionStorage).
package ui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// CSP is the page's Content Security Policy: scripts, styles and requests
// only from the gateway itself, images also from blob: URLs (thumbnails are
// fetched with the API key and shown through object URLs), no plugins, no
// framing, no inline code.
const CSP = "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Handler serves the page's files at the root of its path (mount it with
// http.StripPrefix).
func Handler() http.Handler {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embed pattern guarantees the folder
	}
	fileServer := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		// The files change with the binary and are small (embed keeps no
		// modification times to revalidate against): never reuse a stale copy.
		h.Set("Cache-Control", "no-cache")
		fileServer.ServeHTTP(w, r)
	})
}
