// Package webui is the operator's web UI of ocm-jobs, served by the jobs function at /ui/:
// static HTML, JavaScript and CSS embedded in the binary (no build step, nothing fetched from
// elsewhere). The page asks for a bearer token (a sign-in form, or a #token= fragment that
// never reaches a server), keeps it in the tab's sessionStorage and reads and changes job
// groups through the REST API with it, so it has exactly the rights the token's roles give.
//
// The files are served with a strict Content Security Policy: scripts, styles and requests
// only from this origin, no inline script or style, no frames, no plugins, and Trusted Types
// required, so no string can ever become markup — the page renders data with textContent.
package webui

import (
	"embed"
	"io/fs"
	"net/http"
)

// Path is where the UI is served (a ServeMux subtree: /ui redirects to it).
const Path = "/ui/"

//go:embed static
var files embed.FS

// ContentSecurityPolicy is the policy every UI response carries.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'; " +
	"require-trusted-types-for 'script'; trusted-types 'none'"

var handler = newHandler()

// Handler serves the UI's files under Path.
func Handler() http.Handler { return handler }

func newHandler() http.Handler {
	static, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree always has it
	}
	files := http.StripPrefix(Path, http.FileServerFS(static))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		// The files change with the binary: revalidate rather than keep a stale script.
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
