package buildertest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"testing"
)

// FileSHA256 is the sha256 of the file at path, in hex: how tests show that
// an image was, or was not, changed.
func FileSHA256(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// SameRange reports whether a and b hold the same bytes in [from, to),
// reading a MiB at a time; a read error fails t.
func SameRange(t testing.TB, a, b io.ReaderAt, from, to int64) bool {
	bufA, bufB := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := from; off < to; {
		n := min(int64(len(bufA)), to-off)
		if _, err := a.ReadAt(bufA[:n], off); err != nil {
			t.Fatal(err)
		}
		if _, err := b.ReadAt(bufB[:n], off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(bufA[:n], bufB[:n]) {
			return false
		}
		off += n
	}
	return true
}
