package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// diskImage returns a deterministic MBR disk image of size bytes (a
// multiple of 1 MiB): text-like and random pages amid large zero regions,
// like a Raspberry Pi OS image with free space.
func diskImage(size int, seed uint64) []byte {
	img := make([]byte, size)
	rng := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	words := []string{"root", "boot", "firmware", "kernel", "systemd", "debian", "usr", "lib", "config", "\n"}
	const mib = 1 << 20
	for off := 0; off < size; off += mib {
		chunk := img[off : off+mib]
		switch rng.IntN(4) {
		case 0: // zero: stays a hole
		case 1: // random-ish binary
			for i := range chunk[:mib/2] {
				chunk[i] = byte(rng.Uint32())
			}
		default: // text, with a zero tail inside the MiB
			var b bytes.Buffer
			for b.Len() < mib*3/4 {
				b.WriteString(words[rng.IntN(len(words))])
				b.WriteByte(' ')
			}
			copy(chunk, b.Bytes()[:mib*3/4])
		}
	}
	clear(img[size-mib:]) // free space at the end: the output must still be full size
	img[510], img[511] = 0x55, 0xaa
	return img
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	return sha256Hex(readFile(t, path))
}

// need fails the test when a real tool the tests exercise is missing.
func need(t *testing.T, tool, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("%s not found: apt-get install -y %s", tool, debianPackage)
	}
	return path
}

// run runs a real tool, failing the test with its output on error.
func run(t *testing.T, dir string, argv ...string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", argv, err, out)
	}
}

// compressed writes img to dir/name and packs it with the real tool for
// format, returning the archive's path.
func compressed(t *testing.T, dir string, img []byte, format Format) string {
	t.Helper()
	raw := writeFile(t, filepath.Join(dir, "base.img"), img)
	switch format {
	case Raw:
		return raw
	case XZ:
		need(t, "xz", "xz-utils")
		// Small blocks so even a test image has many, as xz -T0 makes them.
		run(t, dir, "xz", "-T2", "-1", "--block-size=1MiB", "-k", "-f", raw)
		return raw + ".xz"
	case Gzip:
		need(t, "gzip", "gzip")
		run(t, dir, "gzip", "-1", "-k", "-f", raw)
		return raw + ".gz"
	case Zstd:
		need(t, "zstd", "zstd")
		run(t, dir, "zstd", "-q", "-1", "-k", "-f", raw)
		return raw + ".zst"
	case Zip:
		need(t, "zip", "zip")
		writeFile(t, filepath.Join(dir, "README.txt"), []byte("not the image\n"))
		run(t, dir, "zip", "-q", "-1", "base.zip", "base.img", "README.txt")
		return filepath.Join(dir, "base.zip")
	}
	t.Fatalf("no compressor for %v", format)
	return ""
}

// decode opens src and writes it to a new file in t.TempDir().
func decode(t *testing.T, src string, opts Options) (string, Stats, error) {
	t.Helper()
	s, err := Open(context.Background(), src, opts)
	if err != nil {
		return "", Stats{}, err
	}
	defer s.Close()
	out := filepath.Join(t.TempDir(), "out.img")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := s.WriteTo(context.Background(), f)
	return out, st, err
}

func mustEqualFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: decompressed %d bytes differ from the original %d bytes", path, len(got), len(want))
	}
}

var timeZero time.Time
