package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocsQuoteSnippets checks that the configuration lines docs/postfix.md
// shows are those of contrib/postfix, which TestPostfix runs: the docs
// cannot drift from what is tested. It needs neither root nor Postfix.
func TestDocsQuoteSnippets(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "contrib", "postfix", "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no snippets in contrib/postfix: %v", err)
	}
	have := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			// Commented lines count too: main.cf.unix shows the
			// calloutd.toml and install lines that go with it.
			have[strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "#"))] = true
		}
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "postfix.md"))
	if err != nil {
		t.Fatal(err)
	}
	markers := []string{"check_policy_service {", "_time_limit =", " spawn", "argv=", "install -d", "listen = ["}
	checked := 0
	for i, l := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(l, "    ") { // only code blocks
			continue
		}
		line := strings.TrimSpace(l)
		for _, m := range markers {
			if strings.Contains(line, m) {
				checked++
				if !have[line] {
					t.Errorf("docs/postfix.md:%d: %q is in no file of contrib/postfix", i+1, line)
				}
				break
			}
		}
	}
	if checked < 8 {
		t.Errorf("only %d configuration lines of docs/postfix.md checked; has its layout changed?", checked)
	}
}
