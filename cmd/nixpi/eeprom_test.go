package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/firstboot/eeprom"
)

// eepromData returns ../shared/testdata/rpi-eeprom next to the repository, or
// skips when the real bootloader images are absent.
func eepromData(t *testing.T) string {
	t.Helper()
	data := filepath.Join(eepromRepoRoot(t), "..", "shared", "testdata", "rpi-eeprom")
	if _, err := os.Stat(filepath.Join(data, "images")); err != nil {
		t.Skipf("real bootloader images not found at %s: %v", data, err)
	}
	return data
}

func eepromRepoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		if filepath.Dir(dir) == dir {
			t.Fatal("go.mod not found")
		}
		dir = filepath.Dir(dir)
	}
	return dir
}

func runEepromCLI(env map[string]string, args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	getenv := func(k string) string { return env[k] }
	code := run(context.Background(), append([]string{"eeprom"}, args...), strings.NewReader(""), &stdout, &stderr, getenv)
	return code, stdout.String(), stderr.String()
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEepromConfigPrints(t *testing.T) {
	t.Parallel()
	data := eepromData(t)
	img := filepath.Join(data, "images", "pieeprom-2020-09-03.bin")
	code, stdout, stderr := runEepromCLI(nil, "config", img)
	if want := string(mustRead(t, filepath.Join(data, "configs", "bootconf-2020-09-03.txt"))); code != 0 || stdout != want {
		t.Fatalf("config: exit %d, stdout %q, stderr %q; want %q", code, stdout, stderr, want)
	}
	// --out with no --config writes the config to a file, as rpi-eeprom-config does.
	out := filepath.Join(t.TempDir(), "boot.conf")
	if code, _, stderr := runEepromCLI(nil, "config", img, "--out", out); code != 0 {
		t.Fatalf("config --out: exit %d: %s", code, stderr)
	}
	if got := string(mustRead(t, out)); got != stdout {
		t.Errorf("config --out wrote %q", got)
	}
	// Reading with --out IMAGE would replace the image by its config: refused.
	copyPath := filepath.Join(t.TempDir(), "pieeprom.bin")
	orig := mustRead(t, img)
	if err := os.WriteFile(copyPath, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runEepromCLI(nil, "config", copyPath, "--out", copyPath); code != 1 || !strings.Contains(stderr, "is IMAGE itself") {
		t.Errorf("config IMAGE --out IMAGE: exit %d, %s", code, stderr)
	}
	if !bytes.Equal(mustRead(t, copyPath), orig) {
		t.Error("config IMAGE --out IMAGE changed the image")
	}
}

// --config/--out writes what rpi-eeprom-config writes: the freeze image in the
// test data was made by it from the 2019-07-15 image.
func TestEepromConfigWritesReferenceImage(t *testing.T) {
	t.Parallel()
	data := eepromData(t)
	out := filepath.Join(t.TempDir(), "new.bin")
	code, stdout, stderr := runEepromCLI(nil, "config", "--config", filepath.Join(data, "bootconf-2019-07-15-freeze.txt"),
		"--out", out, filepath.Join(data, "images", "pieeprom-2019-07-15.bin"))
	if code != 0 || stdout != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if !bytes.Equal(mustRead(t, out), mustRead(t, filepath.Join(data, "pieeprom-2019-07-15-freeze.bin"))) {
		t.Fatal("output differs from pieeprom-2019-07-15-freeze.bin")
	}
}

func TestEepromConfigSigned(t *testing.T) {
	t.Parallel()
	data := eepromData(t)
	signed := filepath.Join(data, "signed")
	out := filepath.Join(t.TempDir(), "signed.bin")
	// Start from the signed image with another config, so the output can only
	// match if config, .sig and key are all written.
	tmp := filepath.Join(t.TempDir(), "unsigned.bin")
	if code, _, stderr := runEepromCLI(nil, "config", filepath.Join(signed, "pieeprom-signed.bin"),
		"--set", "BOOT_ORDER=0xf14", "--out", tmp); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	code, _, stderr := runEepromCLI(nil, "config", tmp, "-c", filepath.Join(signed, "bootconf.txt"),
		"-d", filepath.Join(signed, "bootconf.sig"), "-p", filepath.Join(signed, "public.pem"), "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !bytes.Equal(mustRead(t, out), mustRead(t, filepath.Join(signed, "pieeprom-signed.bin"))) {
		t.Fatal("signed output differs from pieeprom-signed.bin")
	}
}

func TestEepromConfigSet(t *testing.T) {
	t.Parallel()
	data := eepromData(t)
	out := filepath.Join(t.TempDir(), "new.bin")
	img := filepath.Join(data, "images", "pieeprom-2026-08-04.bin")
	code, _, stderr := runEepromCLI(nil, "config", img, "--set", "BOOT_ORDER=0xf41", "--out", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	golden := mustRead(t, filepath.Join(eepromRepoRoot(t), "testdata", "eeprom", "bootconf-2026-08-04-boot-order.txt"))
	code, stdout, _ := runEepromCLI(nil, "config", out)
	if code != 0 || stdout != string(golden) {
		t.Fatalf("config of the result: exit %d, %q, want %q", code, stdout, golden)
	}
	// --set on top of --config, several keys, first KEY= line replaced.
	cfg := filepath.Join(t.TempDir(), "boot.conf")
	if err := os.WriteFile(cfg, []byte("[all]\nBOOT_ORDER=0xf14\nBOOT_UART=0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runEepromCLI(nil, "config", img, "--config", cfg, "--set", "BOOT_ORDER=0xf41", "--set", "BOOT_UART=1", "--out", out, "--force")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	im, err := eeprom.Parse(mustRead(t, out))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(im.Config()); got != "[all]\nBOOT_ORDER=0xf41\nBOOT_UART=1\n" {
		t.Errorf("config = %q", got)
	}
}

func TestEepromDigest(t *testing.T) {
	t.Parallel()
	data := eepromData(t)
	img := filepath.Join(data, "images", "pieeprom-2023-01-11.bin")
	want := func(ts string) string {
		return string(eeprom.Digest(mustRead(t, img), 0))[:64] + "\nts: " + ts + "\n"
	}
	dir := t.TempDir()
	for _, c := range []struct {
		env  map[string]string
		args []string
		ts   string
	}{
		{nil, []string{"--timestamp", "1700000000"}, "1700000000"},
		{map[string]string{"SOURCE_DATE_EPOCH": "1600000000"}, nil, "1600000000"},
		{map[string]string{"SOURCE_DATE_EPOCH": "1600000000"}, []string{"--timestamp", "42"}, "42"},
	} {
		out := filepath.Join(dir, "pieeprom.sig")
		code, _, stderr := runEepromCLI(c.env, append([]string{"digest", img, "--out", out, "--force"}, c.args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", c.args, code, stderr)
		}
		if got := string(mustRead(t, out)); got != want(c.ts) {
			t.Errorf("%v %v: .sig = %q, want %q", c.env, c.args, got, want(c.ts))
		}
	}
	// Without either, the timestamp is now: a plausible number.
	out := filepath.Join(dir, "now.sig")
	before := time.Now().Unix()
	if code, _, stderr := runEepromCLI(nil, "digest", img, "--out", out); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	after := time.Now().Unix()
	got := string(mustRead(t, out))
	ts, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(got, want("")[:69]), "\n"), 10, 64)
	if err != nil || ts < before || ts > after {
		t.Errorf("digest with the current time = %q, want ts between %d and %d", got, before, after)
	}
}

// Errors exit 1, usage errors 2, and neither leaves an output file behind.
func TestEepromErrors(t *testing.T) {
	t.Parallel()
	data := eepromData(t)
	img := filepath.Join(data, "images", "pieeprom-2022-11-25.bin")
	oldImg := filepath.Join(data, "images", "pieeprom-2020-09-03.bin")
	signed := filepath.Join(data, "signed")
	dir := t.TempDir()
	notImage := filepath.Join(dir, "not-an-image.bin")
	if err := os.WriteFile(notImage, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	pi5 := filepath.Join(dir, "pieeprom-pi5.bin")
	if err := os.WriteFile(pi5, make([]byte, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(t.TempDir(), "huge.bin")
	if err := os.WriteFile(huge, make([]byte, eeprom.MaxImageSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	otherConfig := filepath.Join(t.TempDir(), "bootconf.txt")
	if err := os.WriteFile(otherConfig, append(mustRead(t, filepath.Join(signed, "bootconf.txt")), "BOOT_UART=1\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	cases := []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"no subcommand", nil, nil, 2, "needs a subcommand"},
		{"unknown subcommand", nil, []string{"flash"}, 2, "unknown eeprom subcommand"},
		{"no image", nil, []string{"config"}, 2, "exactly one IMAGE"},
		{"two images", nil, []string{"config", img, img}, 2, "exactly one IMAGE"},
		{"unknown flag", nil, []string{"config", img, "--apply", "x"}, 2, "unknown flag"},
		{"set without out", nil, []string{"config", img, "--set", "BOOT_ORDER=0xf41"}, 2, "needs --out"},
		{"config without out", nil, []string{"config", img, "--config", filepath.Join(signed, "bootconf.txt")}, 2, "needs --out"},
		{"set without =", nil, []string{"config", img, "--set", "BOOT_ORDER", "--out", out}, 2, "no '='"},
		{"bad boot order", nil, []string{"config", img, "--set", "BOOT_ORDER=0xf81", "--out", out}, 2, "not a Pi 4 boot mode"},
		{"boot order without 0x", nil, []string{"config", img, "--set", "BOOT_ORDER=f41", "--out", out}, 2, "must start with 0x"},
		{"boot order too long", nil, []string{"config", img, "--set", "BOOT_ORDER=0x111111111", "--out", out}, 2, "1 to 8 hex digits"},
		{"digest without config", nil, []string{"config", img, "--digest", filepath.Join(signed, "bootconf.sig"), "--out", out}, 2, "need --config"},
		{"digest with set", nil, []string{"config", img, "--config", filepath.Join(signed, "bootconf.txt"), "--set", "A=1", "--digest", filepath.Join(signed, "bootconf.sig"), "--out", out}, 2, "--set would change"},
		{"digest without out", nil, []string{"digest", img}, 2, "needs --out"},
		{"bad timestamp", nil, []string{"digest", img, "--out", out, "--timestamp", "yesterday"}, 2, "not a number"},
		{"bad SOURCE_DATE_EPOCH", map[string]string{"SOURCE_DATE_EPOCH": "soon"}, []string{"digest", img, "--out", out}, 1, "SOURCE_DATE_EPOCH"},
		{"missing image", nil, []string{"config", filepath.Join(dir, "nope.bin")}, 1, "no such file"},
		{"not an image", nil, []string{"config", notImage, "--set", "BOOT_ORDER=0xf41", "--out", out}, 1, "exactly 524288"},
		{"pi 5 image", nil, []string{"config", pi5}, 1, "Raspberry Pi 5"},
		{"digest of non-image", nil, []string{"digest", notImage, "--out", out, "--timestamp", "1"}, 1, "exactly 524288"},
		{"config too large", nil, []string{"config", img, "--config", filepath.Join(data, "bootconf-4077.txt"), "--out", out}, 1, "at most 4076"},
		{"missing config", nil, []string{"config", img, "--config", filepath.Join(dir, "none.txt"), "--out", out}, 1, "no such file"},
		{"not a key", nil, []string{"config", img, "--config", filepath.Join(signed, "bootconf.txt"), "--pubkey", filepath.Join(signed, "bootconf.txt"), "--out", out}, 1, "no PEM block"},
		{"unsigned image", nil, []string{"config", oldImg, "--config", filepath.Join(signed, "bootconf.txt"), "--digest", filepath.Join(signed, "bootconf.sig"), "--out", out}, 1, "no bootconf.sig"},
		{"image is a character device", nil, []string{"config", "/dev/zero"}, 1, `"/dev/zero" is a character device, not a regular file`},
		{"config is a FIFO", nil, []string{"config", img, "--config", mkfifo(t, filepath.Join(t.TempDir(), "bootconf.txt")), "--out", out}, 1, "is a FIFO"},
		{"image too large", nil, []string{"config", huge}, 1, "is too large"},
		{"out dir missing", nil, []string{"config", img, "--set", "BOOT_ORDER=0xf41", "--out", filepath.Join(dir, "no", "out")}, 1, "write"},
		{"escape in a value", nil, []string{"config", img, "--set", "TFTP_PREFIX_STR=a\x1b[2Jb", "--out", out}, 2, "the value holds a control character (U+001B)"},
		{"NUL in a value", nil, []string{"config", img, "--set", "TFTP_PREFIX_STR=a\x00b", "--out", out}, 2, "a NUL (U+0000)"},
		{"newline in a value", nil, []string{"config", img, "--set", "TFTP_PREFIX_STR=a\nBOOT_ORDER=0x1", "--out", out}, 2, "a line break (U+000A)"},
		{"tab in a value", nil, []string{"config", img, "--set", "TFTP_PREFIX_STR=a\tb", "--out", out}, 2, "a tab (U+0009)"},
		{"control character in a key", nil, []string{"config", img, "--set", "BOOT\x1b_ORDER=0xf41", "--out", out}, 2, "may contain only letters"},
		{"digest of another config", nil, []string{"config", filepath.Join(signed, "pieeprom-signed.bin"), "--config", otherConfig, "--digest", filepath.Join(signed, "bootconf.sig"), "--out", out}, 1, "is not for --config"},
		{"digest that is no sig", nil, []string{"config", filepath.Join(signed, "pieeprom-signed.bin"), "--config", filepath.Join(signed, "bootconf.txt"), "--digest", filepath.Join(signed, "public.pem"), "--out", out}, 1, "not a .sig made by rpi-eeprom-digest"},
	}
	for _, c := range cases {
		code, stdout, stderr := runEepromCLI(c.env, c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and %q", c.name, code, stderr, c.code, c.want)
		}
		if stdout != "" {
			t.Errorf("%s: stdout %q on error", c.name, stdout)
		}
		if _, err := os.Stat(out); err == nil {
			t.Fatalf("%s: an output file was written", c.name)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("%s holds %d entries after the errors, want only the 2 inputs", dir, len(entries))
	}
}

// --out follows build's rules: never an input, an existing file only with
// --force, and nothing else is touched when refused.
func TestEepromOutRules(t *testing.T) {
	t.Parallel()
	data := eepromData(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "pieeprom.bin")
	if err := os.WriteFile(img, mustRead(t, filepath.Join(data, "images", "pieeprom-2026-08-04.bin")), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "boot.conf")
	if err := os.WriteFile(cfg, []byte("[all]\nBOOT_ORDER=0xf41\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	existing := filepath.Join(dir, "existing.bin")
	if err := os.WriteFile(existing, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	sums := func() map[string][32]byte {
		m := map[string][32]byte{}
		for _, p := range []string{img, cfg, existing} {
			m[p] = fileSum(t, p)
		}
		return m
	}
	before := sums()
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"out is IMAGE", []string{"config", img, "--set", "BOOT_ORDER=0xf41", "--out", img, "--force"}, "is IMAGE: nixpi never overwrites its input"},
		{"out is --config", []string{"config", img, "--config", cfg, "--out", cfg, "--force"}, "is the --config file"},
		{"out exists", []string{"config", img, "--set", "BOOT_ORDER=0xf41", "--out", existing}, "already exists: pass --force"},
		{"read-only out exists", []string{"config", img, "--out", existing}, "already exists: pass --force"},
		{"digest out is IMAGE", []string{"digest", img, "--out", img, "--force", "--timestamp", "1"}, "is IMAGE"},
		{"digest out exists", []string{"digest", img, "--out", existing, "--timestamp", "1"}, "already exists"},
		{"out is a directory", []string{"config", img, "--set", "BOOT_ORDER=0xf41", "--out", dir, "--force"}, "is a directory"},
	} {
		code, stdout, stderr := runEepromCLI(nil, c.args...)
		if code != exitFailure || !strings.Contains(stderr, c.want) || stdout != "" {
			t.Errorf("%s: exit %d, stderr %q; want 1 and %q", c.name, code, stderr, c.want)
		}
	}
	if got := sums(); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Error("a refused eeprom command changed a file")
	}
	if names := dirNames(t, dir); len(names) != 3 {
		t.Errorf("%s holds %v after the refusals, want the 3 files only", dir, names)
	}
	// --force replaces, atomically: the result is a complete image.
	if code, _, stderr := runEepromCLI(nil, "config", img, "--set", "BOOT_ORDER=0xf41", "--out", existing, "--force"); code != exitOK {
		t.Fatalf("--force: exit %d: %s", code, stderr)
	}
	if _, err := eeprom.Parse(mustRead(t, existing)); err != nil {
		t.Errorf("--force result: %v", err)
	}
	if names := dirNames(t, dir); len(names) != 3 {
		t.Errorf("%s holds %v after --force, want no temporary file left", dir, names)
	}
}

func TestEepromHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {"config", "--help"}, {"digest", "-h"}} {
		code, stdout, _ := runEepromCLI(nil, args...)
		if code != 0 || !strings.Contains(stdout, "nixpi eeprom config IMAGE") {
			t.Errorf("%v: exit %d, stdout %q", args, code, stdout)
		}
	}
}

// --set warns about a key the Pi 4 bootloader does not know, naming the
// key it differs from in case only, and still writes the image (a newer
// bootloader may know it); a known key gets no warning.
func TestEepromSetWarnsOnUnknownKey(t *testing.T) {
	t.Parallel()
	data := eepromData(t)
	img := filepath.Join(data, "images", "pieeprom-2022-11-25.bin")
	for _, tc := range []struct{ set, want string }{
		{"boot_order=0xf41", "boot_order is not a Pi 4 bootloader setting: the bootloader's names are case-sensitive, and it ignores boot_order; did you mean BOOT_ORDER?"},
		{"BOOT_ORDR=0xf41", "BOOT_ORDR is not a setting Raspberry Pi documents for the Pi 4 bootloader"},
		{"BOOT_UART=1", ""},
	} {
		out := filepath.Join(t.TempDir(), "out.bin")
		code, _, stderr := runEepromCLI(nil, "config", img, "--set", tc.set, "--out", out)
		if code != exitOK {
			t.Errorf("--set %s: exit %d, %q", tc.set, code, stderr)
		}
		if tc.want == "" && stderr != "" || tc.want != "" && !strings.Contains(stderr, "warning: eeprom config --set: "+tc.want) {
			t.Errorf("--set %s: stderr %q, want %q", tc.set, stderr, tc.want)
		}
	}
}
