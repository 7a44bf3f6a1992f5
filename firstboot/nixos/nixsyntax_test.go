package nixos

import (
	"strings"
	"testing"
)

var syntaxCases = []struct {
	name, text string
	want       string // "" when it passes, else a substring of the error
}{
	{"module", "{ pkgs, ... }: { environment.systemPackages = [ pkgs.git ]; }", ""},
	{"strings and comments", "{ ... }: {\n  # a } in a comment\n  /* and ] here */\n  x = \"a } \\\" b ${toString 1}\";\n  y = ''\n    ''${not} '''quote ${\"}\"}\n  '';\n}", ""},
	{"empty", " \n", "line 1, column 1: the module is empty"},
	{"unclosed brace", "{ pkgs, ... }: {\n  x = 1;\n", `line 1, column 16: this "{" is never closed with "}"`},
	{"stray paren", "{ ... }: {\n  x = [ 1 ) ];\n}", `line 2, column 11: unexpected ')': the "[" opened at line 2, column 7 needs "]" first`},
	{"unclosed string", "{ ... }: { x = \"abc; }", `line 1, column 16: this "\"" is never closed`},
	{"unclosed indented string", "{ ... }: { x = ''\n abc; }", `line 1, column 16: this "''" is never closed with "''"`},
	{"unclosed comment", "{ ... }: { /* x }", "line 1, column 12: this /* comment is never closed"},
	{"closing too much", "{ }\n}", `line 2, column 1: unexpected '}': nothing is open`},
}

func TestCheckSyntax(t *testing.T) {
	t.Parallel()
	for _, tc := range syntaxCases {
		err := CheckSyntax(tc.text)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}

// The fallback never rejects what Nix accepts, and Nix rejects what it rejects.
func TestCheckSyntaxAgreesWithNix(t *testing.T) {
	bin := nixInstantiate(t)
	for _, tc := range syntaxCases {
		_, nixErr := runNix(t, bin, "--parse", "-E", tc.text)
		if (nixErr == nil) != (tc.want == "") {
			t.Errorf("%s: nix-instantiate --parse says %v; CheckSyntax expects ok=%v", tc.name, nixErr, tc.want == "")
		}
	}
}
