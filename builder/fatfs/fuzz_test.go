package fatfs_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nixpi/nixpi/builder/fatfs"
	"github.com/nixpi/nixpi/builder/fixture"
)

// overlay reads base with data laid over it at off: a damaged copy of an
// image without copying the image.
type overlay struct {
	base io.ReaderAt
	off  int64
	data []byte
}

func (o overlay) ReadAt(p []byte, off int64) (int, error) {
	n, err := o.base.ReadAt(p, off)
	for i := range p[:n] {
		if j := off + int64(i) - o.off; j >= 0 && j < int64(len(o.data)) {
			p[i] = o.data[j]
		}
	}
	return n, err
}

// FuzzReadDamaged lays fuzzed bytes over the boot sector, the FAT or the
// root directory of a real FAT32 and reads it: every outcome must be an
// answer or an error, never a panic, a hang or a runaway allocation.
func FuzzReadDamaged(f *testing.F) {
	for _, tool := range []string{"mkfs.fat", "mcopy", "mkfs.ext4", "sfdisk", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			f.Skipf("%s not installed", tool)
		}
	}
	img := filepath.Join(f.TempDir(), "base.img")
	fx, err := fixture.WriteContext(context.Background(), img, fixture.Options{FATSize: 64 << 20})
	if err != nil {
		f.Fatal(err)
	}
	file, err := os.Open(img)
	if err != nil {
		f.Fatal(err)
	}
	defer file.Close()
	p := fx.BootPart
	// Where the regions are in a mkfs.fat FAT32 of this size: boot sector
	// at 0, FAT after the reserved sectors, root directory (cluster 2) after
	// both FATs. Read them from the boot sector rather than guess.
	bs := make([]byte, 512)
	if _, err := file.ReadAt(bs, p.Start); err != nil {
		f.Fatal(err)
	}
	bps := int64(bs[11]) | int64(bs[12])<<8
	reserved := int64(bs[14]) | int64(bs[15])<<8
	fatSectors := int64(bs[36]) | int64(bs[37])<<8 | int64(bs[38])<<16 | int64(bs[39])<<24
	regions := []int64{0, reserved * bps, (reserved + 2*fatSectors) * bps}

	f.Add(uint8(0), bs[:90])
	f.Add(uint8(1), []byte{0xf8, 0xff, 0xff, 0x0f, 0xff, 0xff, 0xff, 0x0f, 0x03, 0, 0, 0, 0x02, 0, 0, 0})
	f.Add(uint8(2), []byte("CONFIG  TXT\x20\x00"))
	f.Fuzz(func(t *testing.T, region uint8, data []byte) {
		if len(data) > 4096 {
			data = data[:4096]
		}
		r := overlay{base: file, off: p.Start + regions[int(region)%len(regions)], data: data}
		fs, err := fatfs.OpenReadOnly(r, p.Start, p.Size)
		if err != nil {
			return
		}
		_ = fs.Label()
		_, _ = fs.FreeBytes()
		if entries, err := fs.List("/"); err == nil {
			for _, e := range entries {
				if e.IsDir {
					_, _ = fs.List(e.Name)
				} else if e.Size < 1<<20 {
					_, _ = fs.ReadFile(e.Name)
				}
			}
		}
		_, _ = fs.ReadFile("config.txt")
	})
}
