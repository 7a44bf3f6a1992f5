package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/config"
)

// runNixpi runs the CLI in-process.
func runNixpi(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errOut, func(string) string { return "" })
	return code, out.String(), errOut.String()
}

func TestConfigInitPassesCheck(t *testing.T) {
	t.Parallel()
	code, example, stderr := runNixpi(t, "", "config", "init")
	if code != exitOK || stderr != "" {
		t.Fatalf("config init: exit %d, stderr %q", code, stderr)
	}
	if !bytes.Equal([]byte(example), config.Example()) || !strings.Contains(example, "# ") {
		t.Fatalf("config init printed something else than the commented example:\n%s", example)
	}
	path := filepath.Join(t.TempDir(), "nixpi.toml")
	if err := os.WriteFile(path, []byte(example), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runNixpi(t, "", "config", "check", path)
	if code != exitOK {
		t.Fatalf("config check of the example: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{path + ": ok\n", "target:  the only USB disk (auto), only if empty (wipe = false)", "layout:  GPT, boot 500MiB, swap the size of RAM (at least 4 GiB minus RAM), btrfs root (@ /, @nix /nix, @home /home)", "boot:    BOOT_ORDER=0xf41"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("check output lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "warning: no [[users]]") {
		t.Errorf("no warning about the missing user: %q", stderr)
	}
}

func TestConfigCheckProblems(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.toml")
	src := "schema = 1\n[target]\ndisk = \"/dev/sda\"\n[[users]]\nname = \"pi\"\npassword_hash = \"MyPassw0rd\"\n[wlan]\nssid = \"home\"\npsk = \"s3cretwifi\"\ncountry = \"Germany\"\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runNixpi(t, "", "config", "check", path)
	if code != exitFailure || stdout != "" {
		t.Fatalf("exit %d, stdout %q", code, stdout)
	}
	for _, want := range []string{
		path + `:3: target.disk = "/dev/sda": use "auto"`,
		path + `:6: password_hash of user "pi" is not a crypt hash`,
		path + `:10: wlan.country = "Germany"`,
		"3 problem(s)",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	for _, secret := range []string{"MyPassw0rd", "s3cretwifi"} {
		if strings.Contains(stderr+stdout, secret) {
			t.Errorf("output shows the secret %q", secret)
		}
	}
}

func TestConfigCheckStdinAndSecrets(t *testing.T) {
	t.Parallel()
	src := "schema = 1\n[[users]]\nname = \"pi\"\npassword_hash = \"$5$saltsalt$L.JQzIaW.1ihQsg0PkX0QHWbo330iXQVSS37QeaNikA\"\n[wlan]\nssid = \"home\"\npsk = \"s3cretwifi\"\ncountry = \"DE\"\n"
	code, stdout, stderr := runNixpi(t, src, "config", "check", "-")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if !strings.HasPrefix(stdout, "<stdin>: ok\n") {
		t.Errorf("stdout: %q", stdout)
	}
	if !strings.Contains(stdout, "users:   pi (password)") || !strings.Contains(stdout, `wlan:    "home" in DE, passphrase set`) {
		t.Errorf("summary: %s", stdout)
	}
	for _, secret := range []string{"s3cretwifi", "L.JQzIaW"} {
		if strings.Contains(stdout, secret) {
			t.Errorf("summary shows a secret: %s", stdout)
		}
	}
}

func TestConfigUsageAndFailures(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "missing.toml")
	fifo := mkfifo(t, filepath.Join(t.TempDir(), "nixpi.toml"))
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"config"}, exitUsage, "config needs a subcommand"},
		{[]string{"config", "frobnicate"}, exitUsage, `unknown config subcommand "frobnicate"`},
		{[]string{"config", "check"}, exitUsage, "config check needs exactly one FILE"},
		{[]string{"config", "check", "a", "b"}, exitUsage, "config check needs exactly one FILE"},
		{[]string{"config", "init", "x"}, exitUsage, "config init takes no arguments"},
		{[]string{"config", "--bogus"}, exitUsage, "unknown flag: --bogus"},
		{[]string{"config", "check", missing}, exitFailure, "config check: read config: open " + missing},
		{[]string{"config", "check", "/dev/zero"}, exitFailure, `"/dev/zero" is a character device, not a regular file: pass an install config as a file`},
		{[]string{"config", "check", fifo}, exitFailure, "is a FIFO"},
	}
	for _, tt := range tests {
		code, _, stderr := runNixpi(t, "", tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.want) {
			t.Errorf("nixpi %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tt.args, " "), code, stderr, tt.code, tt.want)
		}
	}
	endless, err := os.Open("/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	defer endless.Close()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"config", "check", "-"}, endless, &stdout, &stderr, func(string) string { return "" }); code != exitFailure ||
		!strings.Contains(stderr.String(), "standard input is too large: an install config is at most 1 MiB") {
		t.Errorf("config check - < /dev/zero: exit %d, stderr %q", code, stderr.String())
	}
	if code, stdout, _ := runNixpi(t, "", "config", "--help"); code != exitOK || !strings.Contains(stdout, "usage: nixpi config init") {
		t.Errorf("config --help: exit %d, %q", code, stdout)
	}
}

// `--` lets FILE start with "-"; "-" alone is standard input.
func TestConfigCheckFileLikeAnOption(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := writeTestFile(t, filepath.Join(dir, "-x.toml"), "schema = 1\n")
	if code, stdout, stderr := runNixpi(t, "", "config", "check", "--", path); code != exitOK || !strings.Contains(stdout, path+": ok") {
		t.Errorf("config check -- %s: exit %d, %s%s", path, code, stdout, stderr)
	}
	if code, _, stderr := runNixpi(t, "", "config", "check", "--bogus"); code != exitUsage || !strings.Contains(stderr, "unknown flag: --bogus") {
		t.Errorf("config check --bogus: exit %d, %s", code, stderr)
	}
	if code, stdout, _ := runNixpi(t, "schema = 1\n", "config", "check", "-"); code != exitOK || !strings.Contains(stdout, "<stdin>: ok") {
		t.Errorf("config check -: exit %d, %s", code, stdout)
	}
}
