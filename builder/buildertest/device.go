// Package buildertest helps tests of the builder and of `nixpi build`: it
// cross-compiles the real nixpi-firstboot device binaries, the way `make
// build` does, so tests need no prior `make build`.
package buildertest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	binaries  map[string][]byte
	buildErr  error
)

// DeviceBinaries cross-compiles ./cmd/nixpi-firstboot for linux/arm64 and
// linux/arm (GOARM=7) once per test process and returns a function with the
// signature of assets.DeviceBinary that serves them.
func DeviceBinaries(t testing.TB) func(goarch string) ([]byte, error) {
	t.Helper()
	buildOnce.Do(func() { binaries, buildErr = crossCompile() })
	if buildErr != nil {
		t.Fatalf("cross-compile nixpi-firstboot: %v", buildErr)
	}
	return func(goarch string) ([]byte, error) {
		b, ok := binaries[goarch]
		if !ok {
			return nil, fmt.Errorf("test binaries exist for arm64 and arm, not %q", goarch)
		}
		return b, nil
	}
}

func crossCompile() (map[string][]byte, error) {
	dir, err := os.MkdirTemp("", "nixpi-device-bin-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	goTool, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("the go tool is not on PATH: %w", err)
	}
	out := map[string][]byte{}
	for _, target := range []struct{ goarch, goarm string }{{"arm64", ""}, {"arm", "7"}} {
		file := filepath.Join(dir, "nixpi-firstboot-linux-"+target.goarch)
		cmd := exec.Command(goTool, "build", "-trimpath", "-buildvcs=false",
			"-ldflags=-s -w -buildid=", "-o", file, "github.com/nixpi/nixpi/cmd/nixpi-firstboot")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+target.goarch, "GOARM="+target.goarm)
		if msg, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("GOARCH=%s go build: %w\n%s", target.goarch, err, msg)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		out[target.goarch] = b
	}
	return out, nil
}
