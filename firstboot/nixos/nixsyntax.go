package nixos

import (
	"fmt"
	"strings"
)

// NixString quotes s as a Nix double-quoted string: what the templates
// write for every value that comes from the config, so no value can end
// the string early or start an interpolation.
func NixString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' || c == '"':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '$' && i+1 < len(s) && s[i+1] == '{':
			b.WriteString(`\$`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// SyntaxError is a problem CheckSyntax found, at a 1-based line and column
// of the text it was given.
type SyntaxError struct {
	Line, Col int
	Msg       string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("line %d, column %d: %s", e.Line, e.Col, e.Msg)
}

// CheckSyntax is the check `nixpi config check` falls back to when no
// nix-instantiate is on PATH: the text must be non-empty and its brackets,
// strings, interpolations and comments must be balanced. It accepts much
// that Nix would reject; `nix-instantiate --parse` is the real test.
func CheckSyntax(text string) error {
	type open struct {
		tok       string
		line, col int
	}
	var stack []open
	line, col := 1, 1
	top := func() string {
		if len(stack) == 0 {
			return ""
		}
		return stack[len(stack)-1].tok
	}
	closing := map[string]string{"(": ")", "[": "]", "{": "}", "${": "}", `"`: `"`, "''": "''"}
	if strings.TrimSpace(text) == "" {
		return &SyntaxError{1, 1, "the module is empty; write a NixOS module such as { pkgs, ... }: { }"}
	}
	for i := 0; i < len(text); {
		c := text[i]
		rest := text[i:]
		advance := 1
		inString := top() == `"` || top() == "''"
		switch {
		case top() == `"` && c == '\\':
			advance = 2
		case top() == "''" && (strings.HasPrefix(rest, "'''") || strings.HasPrefix(rest, "''$") || strings.HasPrefix(rest, "''\\")):
			advance = 3
		case inString && strings.HasPrefix(rest, "${"):
			stack = append(stack, open{"${", line, col})
			advance = 2
		case top() == `"` && c == '"':
			stack = stack[:len(stack)-1]
		case top() == "''" && strings.HasPrefix(rest, "''"):
			stack = stack[:len(stack)-1]
			advance = 2
		case inString:
		case c == '#':
			advance = strings.IndexByte(rest, '\n')
			if advance < 0 {
				advance = len(rest)
			}
		case strings.HasPrefix(rest, "/*"):
			end := strings.Index(rest[2:], "*/")
			if end < 0 {
				return &SyntaxError{line, col, "this /* comment is never closed with */"}
			}
			advance = end + 4
		case c == '"':
			stack = append(stack, open{`"`, line, col})
		case strings.HasPrefix(rest, "''"):
			stack = append(stack, open{"''", line, col})
			advance = 2
		case strings.HasPrefix(rest, "${"):
			stack = append(stack, open{"${", line, col})
			advance = 2
		case c == '(' || c == '[' || c == '{':
			stack = append(stack, open{string(c), line, col})
		case c == ')' || c == ']' || c == '}':
			if len(stack) == 0 || closing[top()] != string(c) {
				want := "nothing is open"
				if len(stack) > 0 {
					o := stack[len(stack)-1]
					want = fmt.Sprintf("the %q opened at line %d, column %d needs %q first", o.tok, o.line, o.col, closing[o.tok])
				}
				return &SyntaxError{line, col, fmt.Sprintf("unexpected %q: %s", c, want)}
			}
			stack = stack[:len(stack)-1]
		}
		for _, r := range text[i:min(i+advance, len(text))] {
			if r == '\n' {
				line, col = line+1, 1
			} else {
				col++
			}
		}
		i += advance
	}
	if len(stack) > 0 {
		o := stack[len(stack)-1]
		return &SyntaxError{o.line, o.col, fmt.Sprintf("this %q is never closed with %q", o.tok, closing[o.tok])}
	}
	return nil
}
