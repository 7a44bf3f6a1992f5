package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
		wantFile bool
	}{
		{"no out", []string{"--layout", "trixie"}, exitUsage, "--out is required", false},
		{"bad fill", []string{"--out", filepath.Join(dir, "a.img"), "--fill", "lots"}, exitUsage, `bad size "lots"`, false},
		{"bad fat size", []string{"--out", filepath.Join(dir, "b.img"), "--fat-size", "-1MiB"}, exitUsage, "bad size", false},
		{"stray argument", []string{"--out", filepath.Join(dir, "c.img"), "extra"}, exitUsage, `unexpected argument "extra"`, false},
		{"unknown flag", []string{"--colour"}, exitUsage, "unknown flag", false},
		{"bad layout", []string{"--out", filepath.Join(dir, "d.img"), "--layout", "jessie"}, exitFailure, `unknown layout "jessie"`, false},
		{"too small FAT", []string{"--out", filepath.Join(dir, "e.img"), "--fat-size", "32MiB"}, exitFailure, "at least 64 MiB", false},
		{"help", []string{"--help"}, exitOK, "usage: nixpi-fixture", false},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr)
		if code != tc.wantCode || !strings.Contains(stderr.String(), tc.wantErr) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", tc.name, code, stderr.String(), tc.wantCode, tc.wantErr)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("failed runs left files: %v", entries)
	}
}

func TestRunWritesImage(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"mkfs.fat", "mcopy", "mkfs.ext4", "sfdisk", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
	out := filepath.Join(t.TempDir(), "base.img")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--layout", "bookworm", "--arch", "armhf", "--out", out, "--fat-size", "64MiB", "--fill", "1MiB"}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "bookworm armhf") {
		t.Errorf("stdout %q", stdout.String())
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	// 4 MiB before the FAT, 64 MiB FAT, root of 64 MiB + fill headroom.
	if fi.Size() < 132<<20 {
		t.Errorf("image is %d bytes", fi.Size())
	}
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	good := map[string]int64{"0": 0, "123": 123, "4KiB": 4096, "64MiB": 64 << 20, "1GiB": 1 << 30, "2TiB": 2 << 40, "10B": 10}
	for in, want := range good {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "1.5GiB", "-1", "1GB", "1 GiB", "99999999999TiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}
