package fatfs_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nixpi/nixpi/builder/fatfs"
	"github.com/nixpi/nixpi/builder/fixture"
)

// BenchmarkWriteFile writes a 16 MiB file (about a device binary) into a
// real-sized 512 MiB FAT and closes, fixups included.
func BenchmarkWriteFile(b *testing.B) {
	for _, tool := range []string{"mkfs.fat", "mcopy", "mkfs.ext4", "sfdisk", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s not installed", tool)
		}
	}
	img := filepath.Join(b.TempDir(), "base.img")
	fx, err := fixture.WriteContext(context.Background(), img, fixture.Options{})
	if err != nil {
		b.Fatal(err)
	}
	data := bytes.Repeat([]byte("nixpi-firstboot!"), 1<<20)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fs, err := fatfs.Open(f, fx.BootPart.Start, fx.BootPart.Size)
		if err != nil {
			b.Fatal(err)
		}
		if err := fs.MkdirAll("nixpi", epoch); err != nil {
			b.Fatal(err)
		}
		if err := fs.WriteFile("nixpi/nixpi-firstboot", data, epoch); err != nil {
			b.Fatal(err)
		}
		if err := fs.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
