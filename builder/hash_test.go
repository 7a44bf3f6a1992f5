package builder

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// imageHasher must give the plain sha256 whatever the holes: at the start,
// between data, at the end, none, or a file that is all hole.
func TestHashSparse(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	data := bytes.Repeat([]byte("nixpi"), 300_000)
	for name, layout := range map[string][]int64{ // offsets where data is written
		"no holes":      {0},
		"hole first":    {3 * mib},
		"holes between": {0, 5 * mib, 9*mib + 123},
		"hole last":     {0},
		"all hole":      nil,
	} {
		path := filepath.Join(t.TempDir(), "img")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		size := int64(16*mib + 777)
		if name == "no holes" {
			size = int64(len(data))
		}
		for _, off := range layout {
			if _, err := f.WriteAt(data, off); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		f.Close()
		x, err := newImageHasher(path)
		if err != nil {
			t.Fatal(err)
		}
		// In two steps, as when following a decoder.
		if err := x.hashTo(size / 3); err != nil {
			t.Fatal(err)
		}
		if err := x.hashTo(size); err != nil {
			t.Fatal(err)
		}
		x.Close()
		plain, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if want := sha256.Sum256(plain); x.Sum() != hex.EncodeToString(want[:]) {
			t.Errorf("%s: imageHasher differs from sha256 of the file", name)
		}
	}
}
