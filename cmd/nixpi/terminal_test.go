package main

import "testing"

func TestEscapeControl(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"plain text, ünïcode, 🙂\n\tnext line": "plain text, ünïcode, 🙂\n\tnext line",
		"\x1b[2J\x1b]0;owned\x07":             `\x1b[2J\x1b]0;owned\x07`,
		"over\rwrite":                         `over\x0dwrite`,
		"del\x7f c1\u009b31m":                 `del\x7f c1\u009b31m`,
		"bad \xff\xfe utf-8":                  `bad \xff\xfe utf-8`,
		"bidi \u202eevil\u2066":               `bidi \u202eevil\u2066`,
		"nul\x00":                             `nul\x00`,
	} {
		if got := escapeControl(in); got != want {
			t.Errorf("escapeControl(%q) = %q, want %q", in, got, want)
		}
	}
}
