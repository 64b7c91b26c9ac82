package webui

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestServesTheFiles: every file is served under Path with its content type and the policy
// headers; an unknown file is a 404, and /ui redirects to /ui/.
func TestServesTheFiles(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("GET "+Path, Handler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	const redirect = 0
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	for name, tc := range map[string]struct {
		path, contentType, contains string
		status                      int
	}{
		"page":       {Path, "text/html", `<script src="app.js" defer></script>`, http.StatusOK},
		"script":     {Path + "app.js", "text/javascript", "'use strict'", http.StatusOK},
		"style":      {Path + "style.css", "text/css", ".matrix", http.StatusOK},
		"icon":       {Path + "favicon.svg", "image/svg+xml", "<svg", http.StatusOK},
		"no such":    {Path + "nope.js", "text/plain", "404", http.StatusNotFound},
		"bare /ui":   {"/ui", "", "", redirect},
		"index.html": {Path + "index.html", "", "", redirect},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := noRedirect.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if tc.status == redirect {
				if resp.StatusCode < 300 || resp.StatusCode > 399 {
					t.Fatalf("GET %s: %d, want a redirect", tc.path, resp.StatusCode)
				}
				if loc := resp.Header.Get("Location"); loc != Path && loc != "./" {
					t.Errorf("GET %s redirects to %q, want %s", tc.path, loc, Path)
				}
				return
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("GET %s: %d, want %d", tc.path, resp.StatusCode, tc.status)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.contentType) {
				t.Errorf("Content-Type %q, want %s", ct, tc.contentType)
			}
			if !strings.Contains(string(body), tc.contains) {
				t.Errorf("body does not contain %q", tc.contains)
			}
			for h, want := range map[string]string{"Content-Security-Policy": ContentSecurityPolicy, "X-Content-Type-Options": "nosniff",
				"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
				if got := resp.Header.Get(h); got != want {
					t.Errorf("%s: %q, want %q", h, got, want)
				}
			}
		})
	}
}

// TestNoMarkupFromStrings: the page has no inline script, style or event handler (the policy
// would refuse them), and the script never turns a string into markup or code.
func TestNoMarkupFromStrings(t *testing.T) {
	for _, directive := range []string{"script-src 'self'", "style-src 'self'", "require-trusted-types-for 'script'", "default-src 'none'"} {
		if !strings.Contains(ContentSecurityPolicy, directive) {
			t.Errorf("the policy lacks %s", directive)
		}
	}
	if strings.Contains(ContentSecurityPolicy, "unsafe") {
		t.Errorf("the policy allows something unsafe: %s", ContentSecurityPolicy)
	}
	forbidden := map[string]*regexp.Regexp{
		"index.html": regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]|<script>|<style|\sstyle=|\son[a-z]+=|javascript:`),
		"app.js":     regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setTimeout\(\s*['"]`),
	}
	for name, re := range forbidden {
		raw, err := fs.ReadFile(files, "static/"+name)
		if err != nil {
			t.Fatal(err)
		}
		if m := re.FindString(string(raw)); m != "" {
			t.Errorf("%s contains %q", name, m)
		}
	}
}
