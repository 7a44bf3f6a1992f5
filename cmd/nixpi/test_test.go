package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runTestCommand(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append([]string{"test"}, args...), strings.NewReader(""), &stdout, &stderr, func(string) string { return "" })
	return code, stdout.String(), stderr.String()
}

func TestTestCommandUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no mode", nil, "pass --qemu"},
		{"unknown flag", []string{"--qemu", "--frobnicate"}, "unknown flag"},
		{"stray argument", []string{"--qemu", "card.img"}, `unexpected argument "card.img"`},
		{"default base without bootloader images", []string{"--qemu"}, "pass --bootloader DIR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runTestCommand(tc.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			if !strings.Contains(stderr, tc.want) || stdout != "" {
				t.Errorf("stderr %q lacks %q (stdout %q)", stderr, tc.want, stdout)
			}
		})
	}
	if code, stdout, _ := runTestCommand("--help"); code != exitOK || !strings.Contains(stdout, "nixpi test --qemu") {
		t.Errorf("--help: exit %d, stdout %q", code, stdout)
	}
}

// TestTestCommandBadConfig: a config that does not parse stops the test
// before anything is built or booted, and says what is wrong.
func TestTestCommandBadConfig(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("nixpi test refuses to run without root before it reads the config; run as root")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(cfg, []byte("schema = 1\n[target]\ndisk = \"auto\"\nwipe = \"yes\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "work")
	code, stdout, stderr := runTestCommand("--qemu", "--config", cfg, "--bootloader", dir, "--dir", work, "--cache-dir", filepath.Join(dir, "cache"))
	if code != exitFailure {
		t.Errorf("exit %d, want %d; stderr: %s", code, exitFailure, stderr)
	}
	if !strings.Contains(stderr, "bad.toml:4") || stdout != "" {
		t.Errorf("stderr should point at bad.toml line 4: %q", stderr)
	}
	if _, err := os.Stat(filepath.Join(work, "card.img")); !os.IsNotExist(err) {
		t.Errorf("a card was built despite the bad config: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cache")); !os.IsNotExist(err) {
		t.Errorf("the base image cache was touched despite the bad config: %v", err)
	}
}
