package config

import (
	"errors"
	"strings"
	"testing"
)

// parseProblems parses body and returns its problems as text, one a line.
func parseProblems(t *testing.T, body string) string {
	t.Helper()
	_, err := Parse("f.toml", []byte(body))
	var errs Errors
	if err != nil && !errors.As(err, &errs) {
		t.Fatalf("error is %T, not Errors: %v", err, err)
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

// NUL and control characters in any string are refused at the key's line,
// one problem per value, the value quoted escaped (a secret never).
func TestControlCharactersRefusedWithLine(t *testing.T) {
	t.Parallel()
	const head = "schema = 1\n"
	for _, tt := range []struct{ name, body, want string }{
		{"NUL in the hostname", head + "[system]\nhostname = \"pi\\u0000x\"\n", `f.toml:3: system.hostname = "pi\x00x" holds a NUL (U+0000): no value in this file may hold one; remove it`},
		{"escape in the ssid", head + "[wlan]\ncountry = \"DE\"\nssid = \"\\u001b[2J\"\n", `f.toml:4: wlan.ssid = "\x1b[2J" holds an escape character (U+001B)`},
		{"line break in an ssh key", head + "[[users]]\nname = \"al\"\nssh_keys = [\"ssh-ed25519 AAAA\\nroot\"]\n", `f.toml:4: users[0].ssh_keys entry 1 = "ssh-ed25519 AAAA\nroot" holds a line break`},
		{"carriage return in a label", head + "[layout]\nroot_label = \"root\\rfake\"\n", `f.toml:3: layout.root_label = "root\rfake" holds a carriage return (U+000D)`},
		{"tab in the release", head + "[nixos]\nrelease = \"26.05\\t\"\n", `f.toml:3: nixos.release = "26.05\t" holds a tab`},
		{"bidi override in the timezone", head + "[system]\ntimezone = \"UTC\\u202e\"\n", `f.toml:3: system.timezone = "UTC\u202e" holds a bidi control (U+202E)`},
		{"C1 in the keymap", head + "[system]\nkeymap = \"us\\u009b\"\n", `f.toml:3: system.keymap = "us\u009b" holds a control character (U+009B)`},
		{"escape in a substituter with a password", head + "[nixos]\nsubstituters = [\"https://al:pw@c.org/\\u001b\"]\n", `f.toml:3: nixos.substituters entry 1 holds an escape character`},
		{"DEL in a substituter", head + "[nixos]\nsubstituters = [\"https://c.org/\\u007f\"]\n", `f.toml:3: nixos.substituters entry 1 = "https://c.org/\x7f" holds a control character (U+007F)`},
		{"NUL in the psk", head + "[wlan]\nssid = \"h\"\ncountry = \"DE\"\npsk = \"12345678\\u0000\"\n", `f.toml:5: wlan.psk holds a NUL (U+0000): no value in this file may hold one`},
		{"escape in a password hash", head + "[[users]]\nname = \"al\"\npassword_hash = \"$6$x\\u001b\"\n", `f.toml:4: users[0].password_hash holds an escape character`},
		{"NUL in a one-line module, on the key's line", head + "[nixos]\nextra_module = \"{ ... }:\\n{ }\\u0000\"\n", `f.toml:3: nixos.extra_module (line 2 of the module) holds a NUL (U+0000)`},
		{"escape in the module, on its line", head + "[nixos]\nextra_module = \"\"\"\n{ ... }:\n{ # \\u001b[2J\n}\"\"\"\n", `f.toml:5: nixos.extra_module (line 2 of the module) holds an escape character (U+001B), which drives terminals: a module may hold tabs and line breaks, no other control character`},
		{"lone carriage return in the module", head + "[nixos]\nextra_module = \"{ ... }:\\r{ }\"\n", `f.toml:3: nixos.extra_module (line 1 of the module) holds a carriage return`},
	} {
		got := parseProblems(t, tt.body)
		switch {
		case tt.want == "" && got != "":
			t.Errorf("%s: %s", tt.name, got)
		case tt.want != "" && !strings.Contains(got, tt.want):
			t.Errorf("%s:\n got %s\nwant %s", tt.name, got, tt.want)
		case tt.want != "" && strings.Count(got, "\n") > 0:
			t.Errorf("%s: more than the one problem:\n%s", tt.name, got)
		}
		if strings.Contains(got, "12345678") || strings.Contains(got, "$6$x") || strings.Contains(got, "al:pw") {
			t.Errorf("%s: a secret is quoted: %s", tt.name, got)
		}
	}
}

// A module is a file: tabs and line breaks, CRLF ones too, are its own.
func TestExtraModuleMayHoldTabsAndLineBreaks(t *testing.T) {
	t.Parallel()
	body := "schema = 1\r\n[nixos]\r\nextra_module = '''\r\n{ ... }:\r\n{\r\n\tnetworking.firewall.enable = true;\r\n}\r\n'''\r\n"
	if got := parseProblems(t, body); got != "" {
		t.Errorf("a CRLF module with tabs: %s", got)
	}
}

// substituters go into nix.conf, space separated, # a comment: a space or
// # would rewrite what the Pi trusts.
func TestSubstituterSpaceOrHashRefused(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"https://a.org/x y", "https://a.org/#trusted-substituters", "https://a.org/\u00a0"} {
		got := parseProblems(t, "schema = 1\n[nixos]\nsubstituters = [\""+s+"\"]\n")
		if !strings.Contains(got, "f.toml:3: substituter ") || !strings.Contains(got, "holds a space or '#', which nix.conf reads as the end of the entry or a comment; percent-encode them (%20, %23)") {
			t.Errorf("%q: %s", s, got)
		}
	}
	if got := parseProblems(t, "schema = 1\n[nixos]\nsubstituters = [\"https://a.org/x%20y?priority=40\", \"ssh://nix@builder\"]\n"); got != "" {
		t.Errorf("percent-encoded, a query and an ssh user: %s", got)
	}
}

// Credentials in a substituter or the nixpkgs URL are refused and never
// quoted: check, inspect and --json would print them, and the store keeps
// them world-readable.
func TestURLCredentialsRefusedNeverQuoted(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ key, value, want string }{
		{"substituters", `["https://cache.example.org", "https://alice:hunter2@cache.example.org/x"]`, `f.toml:3: substituter 2 ("https://cache.example.org/x") carries a user name or password`},
		{"substituters", `["https://hunter2@cache.example.org"]`, `substituter 1 ("https://cache.example.org") carries a user name or password`},
		{"substituters", `["ssh://nix:hunter2@builder"]`, `substituter 1 ("ssh://builder") carries a user name or password`},
		{"substituters", `["https://alice:hunter2 x@cache.example.org"]`, `substituter 1 ("https://cache.example.org") carries`},
		{"nixpkgs_url", `"https://alice:hunter2@mirror.example.org/n.tar.gz"`, "f.toml:3: nixos.nixpkgs_url carries a user name or password"},
		{"nixpkgs_url", `"https://alice:hunter2@mirror example/n.tar.gz"`, "f.toml:3: nixos.nixpkgs_url carries a user name or password"},
	} {
		got := parseProblems(t, "schema = 1\n[nixos]\n"+tt.key+" = "+tt.value+"\n")
		if !strings.Contains(got, tt.want) || strings.Contains(got, "hunter2") || strings.Contains(got, "alice") {
			t.Errorf("%s = %s:\n got %s\nwant %s, and no credentials", tt.key, tt.value, got, tt.want)
		}
	}
}

// A flake URL's password would be printed, logged and stored the same way.
func TestFlakePasswordRefused(t *testing.T) {
	t.Parallel()
	got := parseProblems(t, "schema = 1\n[nixos]\nflake = \"git+https://alice:hunter2@git.example.org/cfg#pi\"\n")
	if !strings.Contains(got, "f.toml:3: nixos.flake carries a password (user:password@)") || strings.Contains(got, "hunter2") {
		t.Errorf("flake with a password: %s", got)
	}
	if got := parseProblems(t, "schema = 1\n[nixos]\nflake = \"git+ssh://git@github.com/me/cfg#pi\"\n"); got != "" {
		t.Errorf("flake over ssh with a user: %s", got)
	}
}
