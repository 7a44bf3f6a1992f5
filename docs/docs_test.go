// Package docs is nixpi's documentation. Its test checks what the pages
// point at: relative links and their anchors resolve, and every source
// path they name exists. The pages' facts are checked against the code
// beside that code (firstboot/config, firstboot/steps, cmd/nixpi).
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// pages are the README and this directory's pages, by path from the
// repository root.
func pages(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range append(paths, "../README.md") {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Clean(filepath.Join("docs", p))] = string(data)
	}
	if len(out) < 7 {
		t.Fatalf("found only %d pages: %v", len(out), paths)
	}
	return out
}

var (
	fence    = regexp.MustCompile("^\\s*```")
	codeSpan = regexp.MustCompile("`[^`]+`")
	link     = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	heading  = regexp.MustCompile(`^#{1,6} (.*)$`)
	// repoPath is a path from the repository root, as the pages write
	// them in code: cmd/nixpi/main.go, ./builder/bench, assets/nixos.
	repoPath = regexp.MustCompile(`(?:^|[\s(])(?:\./)?((?:cmd|builder|firstboot|assets|testdata|docs|\.ci)/[A-Za-z0-9_./-]*)`)
)

// split gives a page's prose (code blocks blanked, code spans kept) and
// its code (block lines and span contents), line by line.
func split(page string) (prose []string, code map[int][]string) {
	code = map[int][]string{}
	inBlock := false
	for i, line := range strings.Split(page, "\n") {
		if fence.MatchString(line) {
			inBlock = !inBlock
			prose = append(prose, "")
			continue
		}
		if inBlock {
			code[i+1] = append(code[i+1], line)
			prose = append(prose, "")
			continue
		}
		for _, s := range codeSpan.FindAllString(line, -1) {
			code[i+1] = append(code[i+1], strings.Trim(s, "`"))
		}
		prose = append(prose, line)
	}
	return prose, code
}

// anchors are the ids GitHub gives a page's headings: lowercased, with
// everything but letters, digits, spaces, '-' and '_' dropped, spaces as
// '-', and -1, -2 added to repeats.
func anchors(page string) map[string]bool {
	prose, _ := split(page)
	ids := map[string]bool{}
	for _, line := range prose {
		m := heading.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		text := regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`).ReplaceAllString(m[1], "$1")
		var id strings.Builder
		for _, r := range strings.ToLower(text) {
			switch {
			case r == ' ':
				id.WriteRune('-')
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				id.WriteRune(r)
			}
		}
		base, n := id.String(), 0
		for s := base; ; n++ {
			if n > 0 {
				s = base + "-" + strconv.Itoa(n)
			}
			if !ids[s] {
				ids[s] = true
				break
			}
		}
	}
	return ids
}

// Every relative link in the README and docs/ names a file that exists
// and, with a #fragment into a page, a heading that page has.
func TestLinksResolve(t *testing.T) {
	t.Parallel()
	all := pages(t)
	links := 0
	for path, page := range all {
		prose, _ := split(page)
		for i, line := range prose {
			// A code span may show link syntax without being a link.
			line = codeSpan.ReplaceAllString(line, "")
			for _, m := range link.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if regexp.MustCompile(`^[a-z]+:`).MatchString(target) {
					continue // http:, https:, mailto:
				}
				links++
				file, frag, _ := strings.Cut(target, "#")
				dest := path
				if file != "" {
					dest = filepath.Clean(filepath.Join(filepath.Dir(path), file))
				}
				if _, err := os.Stat(filepath.Join("..", dest)); err != nil {
					t.Errorf("%s:%d: the link to %s: %s does not exist", path, i+1, target, dest)
					continue
				}
				if frag == "" {
					continue
				}
				destPage, ok := all[dest]
				if !ok {
					t.Errorf("%s:%d: the link to %s has a #fragment into a file that is not one of the pages", path, i+1, target)
					continue
				}
				if !anchors(destPage)[frag] {
					t.Errorf("%s:%d: the link to %s: %s has no heading #%s", path, i+1, target, dest, frag)
				}
			}
		}
	}
	if links < 20 {
		t.Errorf("found only %d relative links: is the parser still reading them?", links)
	}
}

// Every source path the pages name in code (a file, a folder) exists, so
// moving a package fails here until the pages follow.
func TestNamedPathsExist(t *testing.T) {
	t.Parallel()
	named := 0
	for path, page := range pages(t) {
		_, code := split(page)
		for line, texts := range code {
			for _, text := range texts {
				for _, m := range repoPath.FindAllStringSubmatch(text, -1) {
					p := strings.TrimRight(m[1], ".")
					named++
					if _, err := os.Stat(filepath.Join("..", p)); err != nil {
						t.Errorf("%s:%d: names %s, which does not exist", path, line, p)
					}
				}
			}
		}
	}
	if named < 30 {
		t.Errorf("found only %d source paths in the pages: is the parser still reading them?", named)
	}
}

// GitHub's ids, as anchors computes them.
func TestAnchors(t *testing.T) {
	t.Parallel()
	got := anchors("# The install config (`nixpi.toml`)\n## On the Pi: `nixpi-firstboot`\n## Reference\n```\n## not a heading\n```\n## Reference\n")
	for _, want := range []string{"the-install-config-nixpitoml", "on-the-pi-nixpi-firstboot", "reference", "reference-1"} {
		if !got[want] {
			t.Errorf("no anchor %q in %v", want, got)
		}
	}
	if got["not-a-heading"] {
		t.Errorf("a line in a code block became a heading: %v", got)
	}
}
