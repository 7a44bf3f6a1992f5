package buildertest

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// FsckFAT runs `fsck.fat -n -v` on the FAT partition at [start, start+size)
// of image and returns its output; it fails the test unless fsck exits 0.
// fsck.fat takes no offset, so the partition is first copied, sparsely, to
// a temporary file.
func FsckFAT(t testing.TB, image string, start, size int64) string {
	t.Helper()
	part := filepath.Join(t.TempDir(), "fat.img")
	copyRangeSparse(t, image, start, size, part)
	out, err := exec.Command("fsck.fat", "-n", "-v", part).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.fat -n on partition at %d of %s: %v\n%s", start, image, err, out)
	}
	return string(out)
}

// Mtype returns a file from the FAT partition at start as mtools reads it
// (`mtype -i image@@start ::/name`).
func Mtype(t testing.TB, image string, start int64, name string) []byte {
	t.Helper()
	cmd := exec.Command("mtype", "-i", image+"@@"+strconv.FormatInt(start, 10), "::/"+name)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mtype ::/%s from %s@@%d: %v\n%s", name, image, start, err, stderr.String())
	}
	return out
}

func copyRangeSparse(t testing.TB, src string, start, size int64, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	r := io.NewSectionReader(in, start, size)
	for off := int64(0); off < size; {
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), size-off)])
		if err != nil {
			t.Fatalf("read %s at %d: %v", src, start+off, err)
		}
		if !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := out.WriteAt(buf[:n], off); err != nil {
				t.Fatal(err)
			}
		}
		off += int64(n)
	}
	if err := out.Truncate(size); err != nil {
		t.Fatal(err)
	}
}
