package blockdev

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireLoop skips unless loop devices, mkfs.ext4 and mount can be used
// (as root: CI runs these).
func requireLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: loop-device tests need root (CI runs them as root)")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("skipping: no loop device support here (%v)", err)
	}
	for _, tool := range []string{"losetup", "sgdisk", "partx", "mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s is not installed (apt-get install util-linux gdisk e2fsprogs)", tool)
		}
	}
}

func must(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%q: %v: %s", argv, err, out)
	}
	return strings.TrimSpace(string(out))
}

// attach attaches a loop device (losetup options, the file last), detached
// at cleanup.
func attach(t *testing.T, args ...string) string {
	t.Helper()
	dev := must(t, append([]string{"losetup", "--find", "--show"}, args...)...)
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// loopDisk is a sparse file of size bytes on a loop device with one ext4
// partition (p1, 64 MiB, at 1 MiB).
func loopDisk(t *testing.T, size int64) (dev, img string) {
	t.Helper()
	img = filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil || os.Truncate(img, size) != nil {
		t.Fatal("create disk image", err)
	}
	dev = attach(t, "--partscan", img)
	must(t, "sgdisk", "--new=1:2048:+64M", dev)
	must(t, "partx", "--update", dev)
	waitNode(t, dev, dev+"p1")
	must(t, "mkfs.ext4", "-q", dev+"p1")
	return dev, img
}

// waitNode waits for partition node path of disk to appear.
func waitNode(t *testing.T, disk, path string) {
	t.Helper()
	for i := 0; ; i++ {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if i == 50 {
			t.Fatalf("%s did not appear", path)
		}
		if i == 5 {
			exec.Command("partx", "--update", disk).Run()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func mountAt(t *testing.T, dev string, opts ...string) string {
	t.Helper()
	dir := t.TempDir()
	must(t, append(append([]string{"mount"}, opts...), dev, dir)...)
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

func realUses(t *testing.T, dev string) string {
	t.Helper()
	d, err := ProbeNode("/", dev)
	if err != nil {
		t.Fatal(err)
	}
	us, err := d.Uses()
	if err != nil {
		t.Fatal(err)
	}
	busy, err := d.Busy()
	if err != nil {
		t.Fatal(err)
	}
	return Join(append(us, busy...))
}

// A disk backing a loop device whose filesystem is mounted: the loop
// driver does not claim what it reads, so only the loop devices' own
// records tell.
func TestLoopBackedByTheDiskMounted(t *testing.T) {
	t.Parallel()
	requireLoop(t)
	dev, _ := loopDisk(t, 128<<20)
	if got := realUses(t, dev); got != "" {
		t.Fatalf("uses of an unused disk: %s", got)
	}
	over := attach(t, "--partscan", "--read-only", dev)
	waitNode(t, over, over+"p1")
	mnt := mountAt(t, over+"p1", "-o", "ro,noload")
	got := realUses(t, dev)
	for _, want := range []string{
		`"` + dev + `" is the backing file of loop device "` + over + `"`,
		`"` + over + `p1" (on "` + dev + `") is mounted at "` + mnt + `"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("uses %s\nlack %s", got, want)
		}
	}
	// The kernel itself sees nothing holding the disk.
	d, _ := ProbeNode("/", dev)
	if busy, err := d.Busy(); err != nil || len(busy) != 0 {
		t.Errorf("Busy = %v, %v: the loop driver claims what it reads after all?", busy, err)
	}
}

// A loop device over a file on the disk's filesystem, that filesystem
// lazily unmounted (so no mount table shows it) and the file deleted (so
// its path leads nowhere): the loop driver's st_dev of the file still
// names the partition.
func TestLoopOverAFileOnTheDisk(t *testing.T) {
	t.Parallel()
	requireLoop(t)
	dev, _ := loopDisk(t, 128<<20)
	mnt := mountAt(t, dev+"p1")
	file := filepath.Join(mnt, "inner.img")
	if err := os.WriteFile(file, nil, 0o600); err != nil || os.Truncate(file, 8<<20) != nil {
		t.Fatal("inner image", err)
	}
	inner := attach(t, file)
	if got, want := realUses(t, dev), `"`+dev+`p1" holds "`+file+`", the backing file of loop device "`+inner+`"`; !strings.Contains(got, want) {
		t.Errorf("uses %s\nlack %s", got, want)
	}
	if loops, err := LoopsOf("/", file); err != nil || len(loops) != 1 || loops[0] != inner {
		t.Errorf("LoopsOf(%s) = %q, %v, want %s", file, loops, err, inner)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	must(t, "umount", "--lazy", mnt)
	// sysfs names the file from the detached filesystem's root now.
	got := realUses(t, dev)
	for _, want := range []string{`"` + dev + `p1" holds "/inner.img (deleted)", the backing file of loop device "` + inner + `"`, `"` + dev + `p1" is busy`} {
		if !strings.Contains(got, want) {
			t.Errorf("uses %s\nlack %s", got, want)
		}
	}
}

// btrfs gives its files an anonymous st_dev: the mount's source names the
// partition.
func TestLoopOverAFileOnBtrfs(t *testing.T) {
	t.Parallel()
	requireLoop(t)
	if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
		t.Skip("skipping: mkfs.btrfs is not installed (apt-get install btrfs-progs)")
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil || os.Truncate(img, 256<<20) != nil {
		t.Fatal(err)
	}
	dev := attach(t, "--partscan", img)
	must(t, "sgdisk", "--new=1:2048:+200M", dev)
	must(t, "partx", "--update", dev)
	waitNode(t, dev, dev+"p1")
	must(t, "mkfs.btrfs", "-q", dev+"p1")
	mnt := mountAt(t, dev+"p1")
	// One file at the top, one in a subvolume no mount shows.
	must(t, "btrfs", "subvolume", "create", filepath.Join(mnt, "sub"))
	want := []string{`"` + dev + `p1" is mounted at "` + mnt + `"`}
	for _, file := range []string{filepath.Join(mnt, "inner.img"), filepath.Join(mnt, "sub/inner.img")} {
		if err := os.WriteFile(file, nil, 0o600); err != nil || os.Truncate(file, 8<<20) != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(file, &st); err != nil || Dev(st.Dev).Major() != 0 || Dev(st.Dev).String() == mountMajMin(t, mnt) {
			t.Fatalf("%s on btrfs has st_dev %s (%v), want an anonymous one that is not the mount's", file, Dev(st.Dev), err)
		}
		want = append(want, `"`+dev+`p1" holds "`+file+`", the backing file of loop device "`+attach(t, file)+`"`)
	}
	got := realUses(t, dev)
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("uses %s\nlack %s", got, w)
		}
	}
}

// mountMajMin is what mountinfo says of the mount at dir.
func mountMajMin(t *testing.T, dir string) string {
	t.Helper()
	mounts, err := ReadMountInfo("/")
	if err != nil {
		t.Fatal(err)
	}
	if m := MountOf(mounts, dir); m != nil && m.MountPoint == dir {
		return m.MajMin
	}
	t.Fatalf("nothing is mounted at %s", dir)
	return ""
}

// OpenExclusive keeps others out while it is open, and refuses while they
// are in.
func TestOpenExclusive(t *testing.T) {
	t.Parallel()
	requireLoop(t)
	dev, _ := loopDisk(t, 128<<20)
	d, err := ProbeNode("/", dev)
	if err != nil {
		t.Fatal(err)
	}
	f, err := d.OpenExclusive(unix.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.OpenExclusive(unix.O_RDONLY); !errors.Is(err, unix.EBUSY) {
		t.Errorf("a second exclusive open: %v, want EBUSY", err)
	}
	if out, err := exec.Command("mount", "-o", "ro", dev+"p1", t.TempDir()).CombinedOutput(); err == nil {
		exec.Command("umount", dev+"p1").Run()
		t.Errorf("mounted a partition of a disk held exclusively: %s", out)
	}
	f.Close()
	// A node that is another device now is refused.
	other, _ := loopDisk(t, 128<<20)
	link := filepath.Join(t.TempDir(), "card")
	if err := os.Symlink(dev, link); err != nil {
		t.Fatal(err)
	}
	d, err = ProbeNode("/", link)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(link); err != nil || os.Symlink(other, link) != nil {
		t.Fatal("repoint the link", err)
	}
	if _, err := d.OpenExclusive(unix.O_RDONLY); err == nil || !strings.Contains(err.Error(), "is now the block device") {
		t.Errorf("open through a link repointed to %s: %v, want it refused", other, err)
	}
}
