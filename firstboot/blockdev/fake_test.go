package blockdev

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeRoot is a made-up /proc, /sys and /dev under a temporary directory,
// shaped as the kernel shapes them (sysfs links are relative, as the
// kernel's are).
type fakeRoot struct {
	t    *testing.T
	root string
}

func newFakeRoot(t *testing.T) *fakeRoot {
	t.Helper()
	f := &fakeRoot{t: t, root: t.TempDir()}
	f.put("proc/self/mountinfo", "1 0 62:0 / / rw - ext4 /dev/vda rw\n")
	f.put("proc/swaps", "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
	return f
}

func (f *fakeRoot) put(path, data string) {
	f.t.Helper()
	full := filepath.Join(f.root, path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeRoot) link(path, target string) {
	f.t.Helper()
	full := filepath.Join(f.root, path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Symlink(target, full); err != nil {
		f.t.Fatal(err)
	}
}

// disk adds a whole disk at sysfs path dir (under /sys/devices) with its
// partitions (their device numbers follow the disk's) and returns its
// device number.
func (f *fakeRoot) disk(dir string, dev Dev, sectors int64, parts ...string) Dev {
	f.t.Helper()
	name := filepath.Base(dir)
	sys := filepath.Join("sys/devices", dir)
	f.put(filepath.Join(sys, "dev"), dev.String()+"\n")
	f.put(filepath.Join(sys, "size"), fmt.Sprintln(sectors))
	f.put(filepath.Join(sys, "removable"), "0\n")
	f.put(filepath.Join(sys, "queue/logical_block_size"), "512\n")
	f.sysLinks(name, sys, dev)
	for i, p := range parts {
		pdev := MakeDev(dev.Major(), dev.Minor()+uint32(i)+1)
		psys := filepath.Join(sys, p)
		f.put(filepath.Join(psys, "dev"), pdev.String()+"\n")
		f.put(filepath.Join(psys, "partition"), fmt.Sprintln(i+1))
		f.put(filepath.Join(psys, "size"), "2048\n")
		f.sysLinks(p, psys, pdev)
	}
	return dev
}

// sysLinks are /sys/dev/block/MAJ:MIN, /sys/class/block/NAME and, for a
// whole disk, /sys/block/NAME.
func (f *fakeRoot) sysLinks(name, sys string, dev Dev) {
	f.t.Helper()
	f.link(filepath.Join("sys/dev/block", dev.String()), filepath.Join("../../..", sys))
	f.link(filepath.Join("sys/class/block", name), filepath.Join("../../..", sys))
	if filepath.Base(filepath.Dir(sys)) == "block" {
		f.link(filepath.Join("sys/block", name), filepath.Join("../..", sys))
	}
}

// node makes /dev/NAME the block device dev (needs CAP_MKNOD).
func (f *fakeRoot) node(name string, dev Dev) {
	f.t.Helper()
	path := filepath.Join(f.root, "dev", name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(dev)); err != nil {
		f.t.Skipf("skipping: mknod %s: %v (run as root)", path, err)
	}
}

// loop adds loop device NAME with dev, reading backing (a path as sysfs
// shows it).
func (f *fakeRoot) loop(name string, dev Dev, backing string, parts ...string) Dev {
	f.t.Helper()
	f.disk("virtual/block/"+name, dev, 1<<20, parts...)
	f.put(filepath.Join("sys/devices/virtual/block", name, "loop/backing_file"), backing+"\n")
	return dev
}
