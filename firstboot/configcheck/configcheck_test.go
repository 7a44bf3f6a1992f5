package configcheck

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/config"
)

const edKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINs/P2AHuutJrx8BjqQ9lRPc2W6FzD+noshMtddXmn3s pi@laptop"

// realNix is a Parser running the machine's nix-instantiate. Without one
// the test is skipped, unless NIXPI_REQUIRE_NIX=1 (CI) makes that a failure.
func realNix(t *testing.T) Parser {
	t.Helper()
	bin, err := exec.LookPath("nix-instantiate")
	if err != nil {
		if os.Getenv("NIXPI_REQUIRE_NIX") == "1" {
			t.Fatal("NIXPI_REQUIRE_NIX=1 but nix-instantiate is not on PATH: apt-get install nix-bin")
		}
		t.Skip("nix-instantiate not on PATH (apt-get install nix-bin); set NIXPI_REQUIRE_NIX=1 to make this a failure")
	}
	p := FindParser(filepath.Dir(bin))
	if !p.ByNix() {
		t.Fatalf("FindParser(%q) did not find %s", filepath.Dir(bin), bin)
	}
	return p
}

// fakeNix is a nix-instantiate that prints stderr and exits with code.
func fakeNix(t *testing.T, stderr string, code int) Parser {
	t.Helper()
	dir := t.TempDir()
	script := fmt.Sprintf("#!/bin/sh\ncat >/dev/null\nprintf '%%s' '%s' >&2\nexit %d\n", stderr, code)
	if err := os.WriteFile(filepath.Join(dir, "nix-instantiate"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return FindParser(dir)
}

func problems(t *testing.T, err error) string {
	t.Helper()
	var errs config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error is %T, not config.Errors: %v", err, err)
	}
	return errs.Error()
}

// A release nixpi has no pin for is refused on every side, at its line:
// today's Pi found it only at the nixpkgs step, after wiping the SSD.
func TestCheckReleaseWithoutPin(t *testing.T) {
	t.Parallel()
	_, err := Check(context.Background(), "f.toml", []byte("schema = 1\n[nixos]\nrelease = \"25.11\"\n"), Parser{})
	if got := problems(t, err); !strings.Contains(got, `f.toml:3: nixos.release = "25.11" has no nixpkgs pin in this nixpi`) {
		t.Errorf("release without a pin: %s", got)
	}
	res, err := Check(context.Background(), "f.toml", []byte("schema = 1\n[nixos]\nrelease = \"25.11\"\nnixpkgs_rev = \"0123456789abcdef0123456789abcdef01234567\"\nnixpkgs_sha256 = \"1a0lr2ydjz4gfvz7y4w8q3x2xk8r5m4a0abr8q9d3gdpr5d0sxi4\"\n"), Parser{})
	if err != nil || res.Files == nil {
		t.Errorf("a release with the user's own pin: %v", err)
	}
}

// A module that does not parse is refused at its line in the file, by
// nixpi's own check without Nix and by nix-instantiate with it.
func TestCheckExtraModuleAtItsLine(t *testing.T) {
	t.Parallel()
	data := []byte("schema = 1\n[nixos]\nextra_module = '''\n{ pkgs, ... }:\n{\n  environment.systemPackages = [ pkgs.git ;\n}\n'''\n")
	_, err := Check(context.Background(), "f.toml", data, Parser{})
	if got := problems(t, err); !strings.Contains(got, `f.toml:7: nixos.extra_module does not parse as Nix (line 4, column 1 of the module): unexpected '}'`) {
		t.Errorf("bracket check: %s", got)
	}
	_, err = Check(context.Background(), "f.toml", data, realNix(t))
	if got := problems(t, err); !strings.Contains(got, "f.toml:6: nixos.extra_module does not parse as Nix (line 3, column 43 of the module): syntax error, unexpected ';'") {
		t.Errorf("nix-instantiate: %s", got)
	}
}

// Large inputs reach nix-instantiate on standard input: as one argument,
// a 200 KB module or the configuration of 1000 users exceeded the kernel's
// 128 KiB limit on an argument (E2BIG), which read as "does not parse".
func TestCheckLargeInputsReachNix(t *testing.T) {
	t.Parallel()
	nix := realNix(t)
	var module strings.Builder
	module.WriteString("{ ... }: {\n  environment.etc = {\n")
	for i := 0; module.Len() < 200<<10; i++ {
		fmt.Fprintf(&module, "    \"big/%d\".text = \"%s\";\n", i, strings.Repeat("x", 100))
	}
	module.WriteString("  };\n}\n")
	big := []byte("schema = 1\n[nixos]\nextra_module = '''\n" + module.String() + "'''\n")
	res, err := Check(context.Background(), "big.toml", big, nix)
	if err != nil || res.ModuleParsedBy != "nix-instantiate --parse" {
		t.Fatalf("200 KB module: %v", err)
	}
	// Broken at its very end, it is still found, at the file's line.
	broken := []byte(strings.Replace(string(big), "  };\n}\n'''", "  };\n}}\n'''", 1))
	_, err = Check(context.Background(), "big.toml", broken, nix)
	if want := fmt.Sprintf("big.toml:%d: nixos.extra_module does not parse as Nix", strings.Count(string(broken), "\n")-1); !strings.Contains(problems(t, err), want) {
		t.Errorf("200 KB module broken at its end: %v, want %q", err, want)
	}

	var users strings.Builder
	users.WriteString("schema = 1\n")
	for i := range 1000 {
		fmt.Fprintf(&users, "[[users]]\nname = \"user%d\"\nssh_keys = [\"%s\"]\n", i, edKey)
	}
	res, err = Check(context.Background(), "users.toml", []byte(users.String()), nix)
	if err != nil {
		t.Fatalf("1000 users: %v", err)
	}
	if n := len(res.Files.Configs[0].Data) + len(res.Files.Configs[1].Data); n < 128<<10 {
		t.Errorf("the generated files of 1000 users are %d bytes, not more than one argument may be", n)
	}
}

// The text is never taken as an option: a module spelled like one is read
// as Nix ("--store" is minus minus store, an undefined variable), and "-"
// is Nix's syntax error, not "read standard input".
func TestParseNeverTakesTextForAnOption(t *testing.T) {
	t.Parallel()
	nix := realNix(t)
	for text, name := range map[string]string{"--store": "store", "--help": "help", "-E": "E", "--add-root /tmp/x": "add-root"} {
		se, err := nix.Parse(context.Background(), text)
		if err != nil || se == nil || se.Msg != "undefined variable '"+name+"'" {
			t.Errorf("Parse(%q) = %v, %v; want it read as Nix", text, se, err)
		}
	}
	if se, err := nix.Parse(context.Background(), "-"); err != nil || se == nil || !strings.Contains(se.Msg, "syntax error") {
		t.Errorf(`Parse("-") = %v, %v; want a syntax error`, se, err)
	}
}

// Exit 1 is a problem of the text, with nix-instantiate's position; any
// other failure is nix-instantiate's, not the config's.
func TestParseReadsNixErrors(t *testing.T) {
	t.Parallel()
	nix := fakeNix(t, "warning: unknown setting\nerror: syntax error, unexpected end of file\n\n       at «stdin»:3:4:\n", 1)
	se, err := nix.Parse(context.Background(), "{")
	if err != nil || se == nil || se.Line != 3 || se.Col != 4 || se.Msg != "syntax error, unexpected end of file" {
		t.Errorf("exit 1: %+v, %v", se, err)
	}
	broken := fakeNix(t, "error: cannot open the store\n", 2)
	_, err = Check(context.Background(), "f.toml", []byte("schema = 1\n"), broken)
	var errs config.Errors
	if err == nil || errors.As(err, &errs) || !strings.Contains(err.Error(), "cannot open the store") {
		t.Errorf("exit 2: %v; want an error that is not the config's", err)
	}
}

// A relative PATH entry would run whatever the working directory holds.
func TestFindParserSkipsRelativePATH(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nix-instantiate"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(mustGetwd(t), dir)
	if err != nil {
		t.Fatal(err)
	}
	if p := FindParser(rel); p.ByNix() {
		t.Errorf("FindParser(%q) took a relative directory", rel)
	}
	if p := FindParser(dir); !p.ByNix() || p.Name() != "nix-instantiate --parse" {
		t.Errorf("FindParser(%q) = %+v", dir, p)
	}
	if p := (Parser{}); p.ByNix() || !strings.Contains(p.Name(), "bracket check only") {
		t.Errorf("the zero Parser: %q", p.Name())
	}
}

func mustGetwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}
