package buildertest

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// LoopDevice attaches a new file of size bytes (zeros, or random bytes
// when random) to a loop device, detached at cleanup. It skips without
// root.
func LoopDevice(t testing.TB, size int64, random bool) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for losetup (CI runs as root)")
	}
	file := filepath.Join(t.TempDir(), "card.dev")
	if random {
		Sh(t, "head", "-c", strconv.FormatInt(size, 10), "/dev/urandom", ">", file)
	} else if err := os.WriteFile(file, nil, 0o600); err != nil || os.Truncate(file, size) != nil {
		t.Fatal("create device file", err)
	}
	dev := Sh(t, "losetup", "--find", "--show", "--partscan", file)
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
	return dev
}

// Sh runs argv (">" FILE redirects stdout) and returns its trimmed stdout.
func Sh(t testing.TB, argv ...string) string {
	t.Helper()
	var out *os.File
	for i, a := range argv {
		if a == ">" {
			f, err := os.Create(argv[i+1])
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			out, argv = f, argv[:i]
			break
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if out != nil {
		cmd.Stdout = out
	}
	if err := cmd.Run(); err != nil {
		t.Fatalf("%q: %v\n%s%s", argv, err, stdout.String(), stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

// FileSum is the sha256 of the first n bytes of path (all of it when it
// is shorter): a device compared with an image of n bytes.
func FileSum(t testing.TB, path string, n int64) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, n); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// WaitPartition waits until path, a partition node of dev that udev makes,
// exists, asking the kernel to reread dev's table if it is slow.
func WaitPartition(t testing.TB, dev, path string) {
	t.Helper()
	for i := 0; ; i++ {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if i == 50 {
			t.Fatalf("%s did not appear", path)
		}
		if i == 5 {
			exec.Command("partx", "--update", dev).Run()
		}
		time.Sleep(100 * time.Millisecond)
	}
}
