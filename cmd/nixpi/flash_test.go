package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/builder/fixture"
)

// flashLoop attaches a zeroed file of size bytes to a loop device,
// detached at cleanup.
func flashLoop(t *testing.T, size int64) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "card.dev")
	if err := os.WriteFile(file, nil, 0o600); err != nil || os.Truncate(file, size) != nil {
		t.Fatal("create device file", err)
	}
	out, err := exec.Command("losetup", "--find", "--show", file).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
	return dev
}

func prefixSum(t *testing.T, path string, n int64) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, n); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

func flashCLI(ctx context.Context, stdin string, args ...string) nixpiRun {
	var stdout, stderr bytes.Buffer
	code := run(ctx, append([]string{"flash"}, args...), strings.NewReader(stdin), &stdout, &stderr, func(string) string { return "" })
	return nixpiRun{code, stdout.String(), stderr.String()}
}

func runNixpiCtx(ctx context.Context, env map[string]string, args ...string) nixpiRun {
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, strings.NewReader(""), &stdout, &stderr, func(k string) string { return env[k] })
	return nixpiRun{code, stdout.String(), stderr.String()}
}

func TestFlashCLI(t *testing.T) {
	t.Parallel()
	if r := flashCLI(context.Background(), "", "card.img"); r.code != exitUsage || !strings.Contains(r.stderr, "want IMAGE and DEVICE") {
		t.Errorf("flash with one argument: exit %d, %q; want 2", r.code, r.stderr)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for losetup (CI runs as root)")
	}
	env := deviceBinariesEnv(t)
	dir := t.TempDir()
	base := writeTestFixture(t, dir, fixture.Options{})
	cfg := writeTestFile(t, filepath.Join(dir, "nixpi.toml"), buildTestConfig)
	img := filepath.Join(dir, "card.img")
	if r := runNixpiEnv(t, env, "build", "--base", base.Path, "--config", cfg, "--out", img); r.code != exitOK || !strings.Contains(r.stderr, "card.img.bmap") {
		t.Fatalf("build: exit %d, %s", r.code, r.stderr)
	}
	st, _ := os.Stat(img)
	dev := flashLoop(t, st.Size())
	name := filepath.Base(dev)
	blank := prefixSum(t, dev, st.Size())

	if r := flashCLI(context.Background(), name+"\n", img, dev); r.code != exitFailure || !strings.Contains(r.stderr, "not removable") {
		t.Errorf("flash onto a loop device without --allow-non-removable: exit %d, %q; want 1, not removable", r.code, r.stderr)
	}
	r := flashCLI(context.Background(), "sda\n", img, dev, "--allow-non-removable")
	if r.code != exitFailure || !strings.Contains(r.stderr, "serial: ") || !strings.Contains(r.stderr, "Type "+name) || !strings.Contains(r.stderr, "was not changed") {
		t.Errorf("flash confirmed with the wrong name: exit %d, %q; want 1, the description, the prompt and 'was not changed'", r.code, r.stderr)
	}
	if prefixSum(t, dev, st.Size()) != blank {
		t.Fatalf("a refused flash changed %s", dev)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := flashCLI(ctx, "", img, dev, "--allow-non-removable", "--yes"); r.code != exitFailure || !strings.Contains(r.stderr, "interrupted: the card is incomplete") {
		t.Errorf("interrupted flash: exit %d, %q; want 1 and that the card is incomplete", r.code, r.stderr)
	}
	r = flashCLI(context.Background(), name+"\n", img, dev, "--allow-non-removable")
	if r.code != exitOK || !strings.Contains(r.stdout, dev+": wrote ") || !strings.Contains(r.stdout, "verified in") || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("flash: exit %d, stdout %q, stderr %q; want one line saying written and verified", r.code, r.stdout, r.stderr)
	}
	if prefixSum(t, dev, st.Size()) != prefixSum(t, img, st.Size()) {
		t.Errorf("%s after nixpi flash does not equal %s", dev, img)
	}

	// Build and flash in one command: the card nixpi build wrote, and
	// nothing left in TMPDIR, where the boot partition is kept meanwhile.
	oneGo := flashLoop(t, st.Size())
	env["TMPDIR"] = t.TempDir()
	if r := runNixpiEnv(t, env, "flash", "--base", base.Path, "--config", cfg, "--yes", "--allow-non-removable", oneGo); r.code != exitOK || !strings.Contains(r.stdout, "verified in") || !strings.Contains(r.stderr, "as "+base.Path+" is decoded") {
		t.Fatalf("flash --base: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if prefixSum(t, oneGo, st.Size()) != prefixSum(t, img, st.Size()) {
		t.Errorf("flash --base wrote a card other than nixpi build's")
	}
	if left, _ := os.ReadDir(env["TMPDIR"]); len(left) != 0 {
		t.Errorf("TMPDIR holds %v after flash --base, want nothing", left)
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	r = runNixpiCtx(ctx, env, "flash", "--base", base.Path, "--config", cfg, "--yes", "--allow-non-removable", oneGo)
	if r.code != exitFailure || !strings.Contains(r.stderr, "interrupted before writing: "+oneGo+" was not changed") {
		t.Errorf("flash --base interrupted at once: exit %d, %q; want 1 and that the card was not changed", r.code, r.stderr)
	}
	for _, args := range [][]string{{"--base", base.Path, oneGo}, {"--config", cfg, img, oneGo}, {"--base", base.Path, "--config", cfg, img, oneGo}} {
		if r := flashCLI(context.Background(), "", args...); r.code != exitUsage {
			t.Errorf("flash %q: exit %d, %q; want a usage error", args, r.code, r.stderr)
		}
	}
}
