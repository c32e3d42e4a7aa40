package ui

import (
	"io/fs"
	"regexp"
	"strings"
	"testing"
)

// The CSP forbids inline code; this keeps the files honest so the policy
// never has to be loosened, and keeps the page offline (no external URLs).
func TestStaticFilesNeedNoInlineCodeNorNetwork(t *testing.T) {
	inlineScript := regexp.MustCompile(`(?is)<script(?:\s[^>]*)?>\s*[^<\s]`)
	handlerAttr := regexp.MustCompile(`(?i)\son[a-z]+\s*=`)
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	n := 0
	err := fs.WalkDir(files, "static", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		b, _ := files.ReadFile(path)
		s := string(b)
		if strings.HasSuffix(path, ".html") {
			if inlineScript.MatchString(s) {
				t.Errorf("%s: inline <script>", path)
			}
			for _, tag := range regexp.MustCompile(`(?i)<script[^>]*>`).FindAllString(s, -1) {
				if !strings.Contains(tag, "src=") {
					t.Errorf("%s: %s has no src", path, tag)
				}
			}
			if strings.Contains(strings.ToLower(s), "<style") || regexp.MustCompile(`(?i)\sstyle\s*=`).MatchString(s) {
				t.Errorf("%s: inline style", path)
			}
			if handlerAttr.MatchString(s) {
				t.Errorf("%s: inline event handler attribute", path)
			}
		}
		if strings.HasSuffix(path, ".js") && (strings.Contains(s, "innerHTML") || strings.Contains(s, "eval(") || strings.Contains(s, ".style.")) {
			t.Errorf("%s: innerHTML, eval or inline style manipulation", path)
		}
		for _, u := range external.FindAllString(s, -1) {
			if u != "http://www.w3.org" { // the SVG namespace, never fetched
				t.Errorf("%s: external URL %s (the page must work offline)", path, u)
			}
		}
		return nil
	})
	if err != nil || n < 4 {
		t.Fatalf("walked %d files: %v", n, err)
	}
}
