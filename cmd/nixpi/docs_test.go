package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// The pages users read: the README and docs/.
func docPages(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	pages := map[string]string{}
	for _, p := range append(paths, "../../README.md") {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		pages[strings.TrimPrefix(p, "../../")] = string(data)
	}
	return pages
}

// codeText is a piece of code on a page: an inline code span, or a line
// of a shell code block (continuation lines joined), with where it starts.
type codeText struct {
	line int
	text string
}

var (
	fence    = regexp.MustCompile("^\\s*```(\\w*)")
	codeSpan = regexp.MustCompile("`([^`]+)`")
)

// shellLanguages are the code blocks that hold commands; other blocks
// (text: diagrams, the source tree) are not read for them.
var shellLanguages = []string{"sh", "shell", "console", "bash"}

// codeTexts finds every code span and shell block line of a page.
func codeTexts(page string) []codeText {
	var out []codeText
	lines := strings.Split(page, "\n")
	prose := make([]string, len(lines)) // the page with code blocks blanked
	inBlock, shell := false, false
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if m := fence.FindStringSubmatch(line); m != nil {
			if !inBlock {
				shell = slices.Contains(shellLanguages, m[1])
			}
			inBlock = !inBlock
			continue
		}
		if !inBlock {
			prose[i] = line
			continue
		}
		if !shell {
			continue
		}
		start := i
		for strings.HasSuffix(line, "\\") && i+1 < len(lines) {
			i++
			line = strings.TrimSuffix(line, "\\") + " " + lines[i]
		}
		out = append(out, codeText{start + 1, line})
	}
	text := strings.Join(prose, "\n")
	for _, m := range codeSpan.FindAllStringSubmatchIndex(text, -1) {
		span := strings.ReplaceAll(text[m[2]:m[3]], "\n", " ")
		out = append(out, codeText{strings.Count(text[:m[0]], "\n") + 1, strings.ReplaceAll(span, `\|`, "|")})
	}
	return out
}

var (
	// shellSeparator ends a command in a code line: a pipe, a redirect,
	// a comment.
	shellSeparator = regexp.MustCompile(` \| | > | < |;|&&| #|\)$`)
	// invocation is nixpi as a command word (bin/nixpi, <(nixpi ...),
	// not nixpi-firstboot or nixpi/journal.jsonl) with its arguments.
	invocation = regexp.MustCompile(`(?:^|[\s(/])nixpi\s+(\S.*)$`)
	subWords   = regexp.MustCompile(`^[a-z][a-z0-9-]*(\|[a-z][a-z0-9-]*)*$`)
)

// invocations are the nixpi command lines written in a code text.
func invocations(code string) [][]string {
	var out [][]string
	for _, piece := range shellSeparator.Split(code, -1) {
		m := invocation.FindStringSubmatch(piece)
		if m == nil {
			continue
		}
		var words []string
		for _, w := range strings.Fields(m[1]) {
			if w = strings.Trim(w, "[]()…,.;:'\""); w != "" {
				words = append(words, w)
			}
		}
		if len(words) > 0 {
			out = append(out, words)
		}
	}
	return out
}

// flagsOf is the FlagSet (sub)command cmd [sub] parses; nil when it has none.
func flagsOf(cmd, sub string) *pflag.FlagSet {
	if sub != "" {
		if s, ok := findSubcommand(cmd, sub); ok && s.flags != nil {
			return s.flags()
		}
		return nil
	}
	if c := commandTable()[cmd]; c.flags != nil {
		return c.flags()
	}
	return nil
}

// hasFlag says whether word (--name, --name=value or -x) is a flag of cmd
// [sub]; --help, -h and --version are understood everywhere.
func hasFlag(cmd, sub, word string) bool {
	name, _, _ := strings.Cut(word, "=")
	if name == "--help" || name == "-h" || name == "--version" {
		return true
	}
	fs := flagsOf(cmd, sub)
	if fs == nil {
		return false
	}
	if long, ok := strings.CutPrefix(name, "--"); ok {
		return fs.Lookup(long) != nil
	}
	return len(name) == 2 && fs.ShorthandLookup(name[1:]) != nil
}

// checkInvocation says what is wrong with one written nixpi command line:
// a command, subcommand or flag the command table does not have.
func checkInvocation(words []string) []string {
	table := commandTable()
	cmd := words[0]
	switch {
	case strings.HasPrefix(cmd, "-"):
		if !hasFlag("", "", cmd) {
			return []string{"nixpi has no option " + cmd}
		}
		return nil
	case strings.ToUpper(cmd) == cmd: // a placeholder: nixpi COMMAND
		return nil
	}
	c, ok := table[cmd]
	if !ok {
		return []string{"nixpi has no command " + cmd}
	}
	var problems []string
	subs := []string{""}
	rest := words[1:]
	if len(c.subcommands) > 0 && len(rest) > 0 && subWords.MatchString(rest[0]) {
		subs = strings.Split(rest[0], "|")
		for _, s := range subs {
			if _, ok := findSubcommand(cmd, s); !ok {
				problems = append(problems, "nixpi "+cmd+" has no subcommand "+s)
			}
		}
		rest = rest[1:]
	}
	for _, w := range rest {
		if !strings.HasPrefix(w, "-") || w == "-" {
			continue
		}
		found := false
		for _, s := range subs {
			found = found || hasFlag(cmd, s, w)
		}
		if !found {
			problems = append(problems, strings.TrimSpace("nixpi "+cmd+" "+strings.Join(subs, "|"))+" has no flag "+w)
		}
	}
	return problems
}

// Every nixpi command line the README and docs/ write names a command,
// subcommand and flags the command table has.
func TestDocsNameRealCommandsAndFlags(t *testing.T) {
	t.Parallel()
	seen := 0
	for path, page := range docPages(t) {
		for _, code := range codeTexts(page) {
			for _, words := range invocations(code.text) {
				seen++
				for _, p := range checkInvocation(words) {
					t.Errorf("%s:%d: `%s`: %s", path, code.line, code.text, p)
				}
			}
		}
	}
	if seen < 20 {
		t.Errorf("found only %d nixpi command lines in the docs: is the parser still reading them?", seen)
	}
}

// cliSection is the part of docs/cli.md under a heading `nixpi CMD [SUB]`.
type cliSection struct {
	cmd, sub string
	line     int
	text     string
}

var (
	heading        = regexp.MustCompile(`^(#{2,3}) (.*)$`)
	commandHeading = regexp.MustCompile("^`nixpi ([a-z-]+)(?: ([a-z-]+))?`$")
	longFlag       = regexp.MustCompile(`(?:^|[^\w-])(--[a-z0-9][a-z0-9-]*)`)
)

// cliSections splits docs/cli.md at its command headings; a level-2
// heading that names no command ends a section, a level-3 one does not.
func cliSections(t *testing.T) []*cliSection {
	t.Helper()
	data, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	var sections []*cliSection
	var cur *cliSection
	inBlock := false
	for i, line := range strings.Split(string(data), "\n") {
		if fence.MatchString(line) {
			inBlock = !inBlock
		}
		if m := heading.FindStringSubmatch(line); m != nil && !inBlock {
			if c := commandHeading.FindStringSubmatch(m[2]); c != nil {
				cur = &cliSection{cmd: c[1], sub: c[2], line: i + 1}
				sections = append(sections, cur)
				continue
			}
			if len(m[1]) == 2 {
				cur = nil
			}
		}
		if cur != nil {
			cur.text += line + "\n"
		}
	}
	return sections
}

// docs/cli.md has a section for every command and for every subcommand
// with flags; each section describes every flag its command has, and
// names no flag it does not have.
func TestCLIPageDescribesEveryFlag(t *testing.T) {
	t.Parallel()
	sections := map[[2]string]*cliSection{}
	for _, s := range cliSections(t) {
		key := [2]string{s.cmd, s.sub}
		if _, dup := sections[key]; dup {
			t.Errorf("docs/cli.md:%d: a second section for nixpi %s %s", s.line, s.cmd, s.sub)
		}
		sections[key] = s
		if _, ok := commandTable()[s.cmd]; !ok {
			t.Errorf("docs/cli.md:%d: a section for nixpi %s, which is no command", s.line, s.cmd)
			continue
		}
		if _, ok := findSubcommand(s.cmd, s.sub); s.sub != "" && !ok {
			t.Errorf("docs/cli.md:%d: a section for nixpi %s %s, which is no subcommand", s.line, s.cmd, s.sub)
			continue
		}
		for _, m := range longFlag.FindAllStringSubmatch(s.text, -1) {
			if !hasFlag(s.cmd, s.sub, m[1]) {
				t.Errorf("docs/cli.md: the section for nixpi %s names %s, which it does not have", strings.TrimSpace(s.cmd+" "+s.sub), m[1])
			}
		}
	}
	describe := func(cmd, sub string) {
		s, ok := sections[[2]string{cmd, sub}]
		name := strings.TrimSpace(cmd + " " + sub)
		if !ok {
			t.Errorf("docs/cli.md has no section \"## `nixpi %s`\"", name)
			return
		}
		if fs := flagsOf(cmd, sub); fs != nil {
			fs.VisitAll(func(f *pflag.Flag) {
				if !regexp.MustCompile(`(?:^|[^\w-])--` + regexp.QuoteMeta(f.Name) + `\b`).MatchString(s.text) {
					t.Errorf("docs/cli.md: the section for nixpi %s does not describe --%s (%s)", name, f.Name, f.Usage)
				}
			})
		}
	}
	for name, c := range commandTable() {
		describe(name, "")
		for _, sub := range c.subcommands {
			if sub.flags != nil {
				describe(name, sub.name)
			}
		}
	}
}
