package inputfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestRead(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	small := filepath.Join(dir, "small.toml")
	if err := os.WriteFile(small, []byte("schema = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, make([]byte, 1025), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := Read(small, "a config", 1024); err != nil || string(b) != "schema = 1\n" {
		t.Errorf("Read(small) = %q, %v", b, err)
	}
	for _, tc := range []struct{ path, want string }{
		{big, `"` + big + `" is too large: a config is at most 1 KiB`},
		{fifo, "is a FIFO, not a regular file: pass a config as a file"}, // must not block
		{"/dev/zero", `"/dev/zero" is a character device, not a regular file`},
		{dir, "is a directory, not a regular file"},
	} {
		if _, err := Read(tc.path, "a config", 1024); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Read(%s): %v, want %q", tc.path, err, tc.want)
		}
	}
	if _, err := Read(filepath.Join(dir, "missing"), "a config", 1024); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read(missing): %v, want fs.ErrNotExist", err)
	}
}

func TestReadAll(t *testing.T) {
	t.Parallel()
	if b, err := ReadAll(strings.NewReader("abc"), "standard input", "a config", 3); err != nil || string(b) != "abc" {
		t.Errorf("ReadAll at the bound = %q, %v", b, err)
	}
	zero, err := os.Open("/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	defer zero.Close()
	_, err = ReadAll(zero, "standard input", "a config", 1<<20)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "standard input is too large: a config is at most 1 MiB") {
		t.Errorf("ReadAll(/dev/zero): %v", err)
	}
}
