package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fixture"
)

// TestMain lets a test run this binary as nixpi itself, to kill it.
func TestMain(m *testing.M) {
	if os.Getenv("NIXPI_TEST_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// A build killed by SIGKILL leaves its temporary file; the next build in
// the directory names it while it is recent and removes it once it is
// stale, and never touches the file of a build still running.
func TestBuildRemovesKilledBuildsTemporaryFile(t *testing.T) {
	t.Parallel()
	env := deviceBinariesEnv(t)
	baseDir := t.TempDir()
	img := writeTestFixture(t, baseDir, fixture.Options{})
	data, err := os.ReadFile(img.Path)
	if err != nil {
		t.Fatal(err)
	}
	// The download stalls half way, so the build is surely running when
	// it is killed.
	sent := make(chan struct{})
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/base.img") {
			http.NotFound(w, r)
			return
		}
		w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		close(sent)
		<-release
	}))
	defer srv.Close()
	defer close(release)

	dir := t.TempDir()
	cfg := writeTestFile(t, filepath.Join(t.TempDir(), "nixpi.toml"), buildTestConfig)
	out := filepath.Join(dir, "card.img")
	cmd := exec.Command(os.Args[0], "build", "--base", srv.URL+"/base.img", "--sha256", buildertest.FileSHA256(t, img.Path), "--config", cfg, "--out", out)
	cmd.Env = append(os.Environ(), "NIXPI_TEST_RUN_MAIN=1", "NIXPI_DEVICE_BINARIES="+env["NIXPI_DEVICE_BINARIES"])
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sent:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		t.Fatal("the build never asked for the base")
	}
	var leftover string
	for deadline := time.Now().Add(30 * time.Second); leftover == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m, _ := filepath.Glob(filepath.Join(dir, ".nixpi-build-*.tmp")); len(m) == 1 {
			leftover = m[0]
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if leftover == "" {
		t.Fatalf("no temporary file while the build ran: %v", dirNames(t, dir))
	}

	// A live build's file (locked, as createPending locks it) is left alone.
	live := filepath.Join(dir, ".nixpi-build-1.tmp")
	lf, err := os.Create(live)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(live, old, old); err != nil {
		t.Fatal(err)
	}

	// Right after the kill it is named, not removed.
	r := runNixpiEnv(t, env, "build", "--base", img.Path, "--config", cfg, "--out", out)
	if r.code != exitOK || !strings.Contains(r.stderr, leftover+" was left by an interrupted build") {
		t.Fatalf("build after the kill: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(leftover); err != nil {
		t.Errorf("a recent leftover was removed: %v", err)
	}
	// Once stale (its build is long dead), the next build removes it.
	if err := os.Chtimes(leftover, old, old); err != nil {
		t.Fatal(err)
	}
	r = runNixpiEnv(t, env, "build", "--force", "--base", img.Path, "--config", cfg, "--out", out)
	if r.code != exitOK || !strings.Contains(r.stderr, "removed "+leftover) || !strings.Contains(r.stderr, "left by a build that was killed") {
		t.Fatalf("build after the leftover went stale: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(leftover); err == nil {
		t.Error("the stale leftover is still there")
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the live build's temporary file was removed: %v", err)
	}
	if strings.Contains(r.stderr, live) {
		t.Errorf("the live build's file is called a leftover:\n%s", r.stderr)
	}
}
