package nixos

// Helpers that run a real Nix (Debian's nix-bin, 2.8 here: too old to
// evaluate nixpkgs, enough to parse and to evaluate our files with stand-in
// module arguments). --store dummy:// keeps them off the machine's store.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// nixInstantiate finds nix-instantiate. Without it the Nix checks are
// skipped, unless NIXPI_REQUIRE_NIX=1 (CI, where nix-bin is installed) makes
// that a failure.
func nixInstantiate(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("nix-instantiate")
	if err == nil {
		return bin
	}
	if os.Getenv("NIXPI_REQUIRE_NIX") == "1" {
		t.Fatalf("NIXPI_REQUIRE_NIX=1 but nix-instantiate is not on PATH: apt-get install nix-bin")
	}
	t.Skip("nix-instantiate not on PATH (apt-get install nix-bin); set NIXPI_REQUIRE_NIX=1 to make this a failure")
	return ""
}

func runNix(t *testing.T, bin string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--store", "dummy://"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, &nixError{err: err, stderr: stderr.String()}
	}
	return out, nil
}

type nixError struct {
	err    error
	stderr string
}

func (e *nixError) Error() string { return e.err.Error() + ": " + strings.TrimSpace(e.stderr) }

// nixParse parses a file with the real Nix parser.
func nixParse(t *testing.T, bin, path string) {
	t.Helper()
	if _, err := runNix(t, bin, "--parse", path); err != nil {
		t.Errorf("nix-instantiate --parse %s: %v", path, err)
	}
}

// testNixpkgsPath is pkgs.path in nixEvalModule: a store path, as the
// pinned nixpkgs is on the Pi.
const testNixpkgsPath = "/nix/store/00000000000000000000000000000000-source"

// nixEvalModule evaluates a NixOS module file to JSON with stand-in
// arguments: pkgs.linuxPackages is a marker string, pkgs.path
// testNixpkgsPath, lib has the functions the templates use (mkDefault as
// nixpkgs' lib writes it: {_type = "override"; priority = 1000; content}),
// and imports are left out (they are other files and the user's module). A
// Nix path literal in the result fails here, since the dummy store cannot
// take a copy of it: that is what keeps secrets as strings, out of the store.
func nixEvalModule(t *testing.T, bin, path string) map[string]any {
	t.Helper()
	expr := `let
  lib = {
    mkDefault = content: { _type = "override"; priority = 1000; inherit content; };
    hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
  };
  m = import ` + path + ` {
    config = { }; inherit lib; modulesPath = "/modules";
    pkgs = { linuxPackages = "<pkgs.linuxPackages>"; path = "` + testNixpkgsPath + `"; };
  };
in builtins.removeAttrs m [ "imports" ]`
	out, err := runNix(t, bin, "--eval", "--strict", "--json", "-E", expr)
	if err != nil {
		t.Fatalf("evaluate %s: %v", path, err)
	}
	var v map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("evaluate %s: %v\n%s", path, err, out)
	}
	return v
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Without nix-instantiate the Nix tests skip, and with NIXPI_REQUIRE_NIX=1
// they fail: run this test binary again with an empty PATH to see both.
func TestMissingNixSkipsOrFails(t *testing.T) {
	empty := t.TempDir()
	for _, tc := range []struct {
		require  string
		wantFail bool
		want     string
	}{
		{"", false, "nix-instantiate not on PATH (apt-get install nix-bin)"},
		{"1", true, "NIXPI_REQUIRE_NIX=1 but nix-instantiate is not on PATH"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestGoldenNix$", "-test.v")
		cmd.Env = append(os.Environ(), "PATH="+empty, "NIXPI_REQUIRE_NIX="+tc.require)
		out, err := cmd.CombinedOutput()
		if (err != nil) != tc.wantFail || !strings.Contains(string(out), tc.want) {
			t.Errorf("NIXPI_REQUIRE_NIX=%q without nix: err %v, want failure %v and %q:\n%s", tc.require, err, tc.wantFail, tc.want, out)
		}
	}
}
