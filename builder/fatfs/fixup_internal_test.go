package fatfs

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixpi/nixpi/builder/fixture"
)

// TestFixupsAreNeeded shows the fixups are not decoration: the same edits
// without them leave a FAT that `fsck.fat -n` rejects (bad `..` entries,
// leaked clusters, a stale FSInfo free count), and with them it passes.
func TestFixupsAreNeeded(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"mkfs.fat", "mcopy", "mkfs.ext4", "sfdisk", "debugfs", "fsck.fat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
	for _, fixups := range []bool{false, true} {
		img := filepath.Join(t.TempDir(), "base.img")
		fx, err := fixture.WriteContext(context.Background(), img, fixture.Options{FATSize: 64 << 20})
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(img, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		fs, err := Open(f, fx.BootPart.Start, fx.BootPart.Size)
		if err != nil {
			t.Fatal(err)
		}
		when := time.Date(2026, 5, 6, 7, 8, 10, 0, time.UTC)
		if err := fs.MkdirAll("nixpi/sub", when); err != nil {
			t.Fatal(err)
		}
		if err := fs.WriteFile("nixpi/sub/a", make([]byte, 10000), when); err != nil {
			t.Fatal(err)
		}
		if err := fs.Remove("start.elf"); err != nil {
			t.Fatal(err)
		}
		if fixups {
			err = fs.Close()
		} else {
			fs.closed = true // skip the fixups
		}
		if err != nil {
			t.Fatal(err)
		}
		f.Close()

		part := filepath.Join(t.TempDir(), "part.fat")
		src, _ := os.Open(img)
		dst, _ := os.Create(part)
		if _, err := io.Copy(dst, io.NewSectionReader(src, fx.BootPart.Start, fx.BootPart.Size)); err != nil {
			t.Fatal(err)
		}
		src.Close()
		dst.Close()
		out, err := exec.Command("fsck.fat", "-n", part).CombinedOutput()
		if fixups && err != nil {
			t.Errorf("with fixups, fsck.fat -n failed: %v\n%s", err, out)
		}
		if !fixups && err == nil {
			t.Errorf("without fixups, fsck.fat -n passed; the go-diskfs caveats may be gone:\n%s", out)
		}
		t.Logf("fixups=%v: fsck.fat: %v\n%s", fixups, err, out)
	}
}
