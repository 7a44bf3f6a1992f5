package blockdev

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The made-up devices use majors 60 and 61, which Linux keeps for local
// experiments: a node of them opens nothing on the machine running the
// tests.
var (
	fakeDisk = MakeDev(60, 16)
	fakeLoop = MakeDev(61, 0)
)

func TestParseDev(t *testing.T) {
	t.Parallel()
	d, err := ParseDev("259:3\n")
	if err != nil || d.Major() != 259 || d.Minor() != 3 || d.String() != "259:3" {
		t.Errorf("ParseDev(259:3) = %v (%d, %d), %v", d, d.Major(), d.Minor(), err)
	}
	// Minors above 255 use the high bits of the encoding.
	if d := MakeDev(8, 300); d.Major() != 8 || d.Minor() != 300 {
		t.Errorf("MakeDev(8, 300) = %d:%d", d.Major(), d.Minor())
	}
	for _, bad := range []string{"", "8", "8:", ":1", "a:b", "8:1:2", "-1:0"} {
		if _, err := ParseDev(bad); err == nil {
			t.Errorf("ParseDev(%q) accepted it", bad)
		}
	}
}

func TestParseMountInfo(t *testing.T) {
	t.Parallel()
	data := "22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/root rw\n" +
		"40 22 0:40 /@nix /mnt/my\\040disk/nix rw,relatime shared:5 master:1 - btrfs /dev/sda3 rw,subvol=/@nix\n"
	m, err := ParseMountInfo([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := Mount{MajMin: "0:40", Root: "/@nix", MountPoint: "/mnt/my disk/nix", Options: "rw,relatime", FSType: "btrfs", Source: "/dev/sda3", SuperOpts: "rw,subvol=/@nix"}
	if len(m) != 2 || m[1] != want {
		t.Fatalf("mounts = %+v", m)
	}
	if got := MountOf(m, "/mnt/my disk/nix/store"); got == nil || got.MajMin != "0:40" {
		t.Errorf("MountOf = %+v", got)
	}
	if got := MountOf(m, "/boot/firmware"); got == nil || got.MountPoint != "/" {
		t.Errorf("MountOf(/boot/firmware) = %+v, want the root mount", got)
	}
	if _, err := ParseMountInfo([]byte("1 2 3\n")); err == nil {
		t.Error("a truncated line parsed")
	}
}

func TestParseSwaps(t *testing.T) {
	t.Parallel()
	swaps := ParseSwaps([]byte("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/sda2                               partition\t65532\t\t0\t\t-2\n/var/swap\\040file file 100 0 -3\n"))
	if !reflect.DeepEqual(swaps, []string{"/dev/sda2", "/var/swap file"}) {
		t.Errorf("swaps = %q", swaps)
	}
}

// Every namespace is read once, through its first process; mounts from
// another namespace than the reader's carry that process.
func TestReadAllMountInfoNamespaces(t *testing.T) {
	t.Parallel()
	f := newFakeRoot(t)
	f.link("proc/self/ns/mnt", "mnt:[1]")
	f.put("proc/7/mountinfo", "1 0 62:0 / / rw - ext4 /dev/vda rw\n")
	f.link("proc/7/ns/mnt", "mnt:[1]")
	f.put("proc/9/mountinfo", "5 0 60:17 / /srv rw - ext4 /dev/sdb1 rw\n")
	f.link("proc/9/ns/mnt", "mnt:[2]")
	f.put("proc/90/mountinfo", "5 0 60:18 / /other rw - ext4 /dev/sdb2 rw\n")
	f.link("proc/90/ns/mnt", "mnt:[2]")
	mounts, err := ReadAllMountInfo(f.root)
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 2 || mounts[0].PID != 0 || mounts[1].PID != 9 || mounts[1].MountPoint != "/srv" {
		t.Errorf("mounts = %+v, want this namespace's, then namespace 2's through process 9", mounts)
	}
	f.put("proc/11/mountinfo", "garbage\n")
	f.link("proc/11/ns/mnt", "mnt:[3]")
	if _, err := ReadAllMountInfo(f.root); err == nil || !strings.Contains(err.Error(), "proc/11/mountinfo") {
		t.Errorf("a damaged mountinfo: %v, want it named", err)
	}
}

func TestProbe(t *testing.T) {
	t.Parallel()
	f := newFakeRoot(t)
	usb := "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block/sdb"
	f.disk(usb, fakeDisk, 62521344, "sdb1", "sdb2")
	f.put("sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/serial", "4C530001\n")
	f.put("sys/devices/"+usb+"/device/vendor", "SanDisk \n")
	f.put("sys/devices/"+usb+"/device/model", "Ultra   Fit\n")
	d, err := Probe(f.root, fakeDisk, "/dev/disk/by-id/usb-SanDisk")
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "sdb" || d.DevPath() != "/dev/sdb" || d.Size != 62521344*512 || d.Bus != "usb" || !d.Removable ||
		d.Model != "SanDisk Ultra Fit" || d.Serial != "4C530001" || d.LogicalBlock != 512 || d.Node != "/dev/disk/by-id/usb-SanDisk" {
		t.Errorf("Probe = %+v", d)
	}
	want := []Partition{{"sdb1", 1, MakeDev(60, 17), 1 << 20}, {"sdb2", 2, MakeDev(60, 18), 1 << 20}}
	if !reflect.DeepEqual(d.Partitions, want) {
		t.Errorf("partitions = %+v, want %+v", d.Partitions, want)
	}

	var perr *PartitionError
	if _, err := Probe(f.root, MakeDev(60, 18), "/dev/sdb2"); !errors.As(err, &perr) || perr.Disk != "/dev/sdb" || perr.Number != 2 ||
		err.Error() != `"/dev/sdb2" is partition 2 of "/dev/sdb"` {
		t.Errorf("Probe of a partition: %v", err)
	}
	if _, err := Probe(f.root, MakeDev(60, 99), "/dev/sdz"); err == nil || !strings.Contains(err.Error(), "no sysfs entry for block device 60:99") {
		t.Errorf("Probe of a device sysfs does not know: %v", err)
	}
}

// uses probes the fake disk and lists its uses, as strings.
func uses(t *testing.T, f *fakeRoot) []string {
	t.Helper()
	d, err := Probe(f.root, fakeDisk, "/dev/sdb")
	if err != nil {
		t.Fatal(err)
	}
	us, err := d.Uses()
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, u := range us {
		out = append(out, u.String())
	}
	return out
}

func TestUsesNone(t *testing.T) {
	t.Parallel()
	f := newFakeRoot(t)
	f.disk("virtual/block/sdb", fakeDisk, 1<<21, "sdb1")
	// Another disk's mount, swap, holder and loop device are not this one's.
	f.disk("virtual/block/sdc", MakeDev(60, 32), 1<<21, "sdc1")
	f.put("proc/self/mountinfo", "1 0 60:33 / /srv rw - ext4 /dev/sdc1 rw\n")
	f.put("sys/devices/virtual/block/sdc/holders/dm-0/dev", "253:0\n")
	f.node("sdc1", MakeDev(60, 33))
	f.loop("loop0", fakeLoop, "/dev/sdc1")
	if got := uses(t, f); len(got) != 0 {
		t.Errorf("uses of an unused disk: %q", got)
	}
}

func TestUsesMountsSwapsHolders(t *testing.T) {
	t.Parallel()
	f := newFakeRoot(t)
	f.disk("virtual/block/sdb", fakeDisk, 1<<21, "sdb1", "sdb2", "sdb3")
	f.node("sdb2", MakeDev(60, 18))
	f.node("sdb3", MakeDev(60, 19))
	f.put("proc/self/mountinfo", "1 0 62:0 / / rw - ext4 /dev/vda rw\n"+
		"2 1 60:17 / /media/my\\040card rw - ext4 /dev/sdb1 rw\n"+
		// btrfs: the anonymous st_dev says nothing, the source's node does.
		"3 1 0:45 /@ /data rw - btrfs /dev/sdb3 rw,subvol=/@\n")
	f.link("proc/self/ns/mnt", "mnt:[1]")
	// The same mount in another namespace is one use; one only there is.
	f.put("proc/40/mountinfo", "2 1 60:17 / /media/my\\040card rw - ext4 /dev/sdb1 rw\n7 1 60:17 / /in-container rw - ext4 /dev/sdb1 rw\n")
	f.link("proc/40/ns/mnt", "mnt:[2]")
	f.put("proc/swaps", "Filename Type Size Used Priority\n/dev/sdb2 partition 100 0 -2\n")
	f.put("sys/devices/virtual/block/sdb/sdb1/holders/dm-3/dev", "253:3\n")
	want := []string{
		`"/dev/sdb1" is mounted at "/media/my card"`,
		`"/dev/sdb1" is mounted at "/in-container" in the mount namespace of process 40 (a container, or unshare -m)`,
		`"/dev/sdb2" is active swap`,
		`"/dev/sdb3" is mounted at "/data"`,
		`"/dev/sdb1" is held by "/dev/dm-3"`,
	}
	if got := uses(t, f); !reflect.DeepEqual(got, want) {
		t.Errorf("uses:\n%q\nwant\n%q", got, want)
	}
}

// A device built on a device built on the disk is a use of the disk: a
// loop device over a partition, a loop device over that loop device's
// partition, a device-mapper device over a loop device, and what is
// mounted from them.
func TestUsesStacked(t *testing.T) {
	t.Parallel()
	f := newFakeRoot(t)
	f.disk("virtual/block/sdb", fakeDisk, 1<<21, "sdb1")
	f.node("sdb1", MakeDev(60, 17))
	f.loop("loop0", fakeLoop, "/dev/sdb1", "loop0p1")
	f.node("loop0p1", MakeDev(61, 1))
	f.loop("loop1", MakeDev(61, 8), "/dev/loop0p1")
	f.put("sys/devices/virtual/block/loop1/holders/dm-0/dev", "253:0\n")
	f.disk("virtual/block/dm-0", MakeDev(253, 0), 1<<20)
	f.put("proc/self/mountinfo", "1 0 62:0 / / rw - ext4 /dev/vda rw\n2 1 253:0 / /deep rw - ext4 /dev/mapper/x rw\n3 1 61:8 / /loop rw - ext4 /dev/loop1 rw\n")
	want := []string{
		`"/dev/sdb1" is the backing file of loop device "/dev/loop0"`,
		`"/dev/loop0p1" (on "/dev/sdb1") is the backing file of loop device "/dev/loop1"`,
		`"/dev/loop1" (on "/dev/loop0p1") is mounted at "/loop"`,
		`"/dev/loop1" (on "/dev/loop0p1") is held by "/dev/dm-0"`,
		`"/dev/dm-0" (on "/dev/loop1") is mounted at "/deep"`,
	}
	if got := uses(t, f); !reflect.DeepEqual(got, want) {
		t.Errorf("uses:\n%q\nwant\n%q", got, want)
	}
}

// A loop device over a file, and a swap file, are uses of the disk whose
// filesystem holds the file: found by the file's st_dev, through the
// mount's source when the filesystem's st_dev is anonymous (btrfs).
func TestUsesThroughFiles(t *testing.T) {
	t.Parallel()
	f := newFakeRoot(t)
	if err := os.MkdirAll(filepath.Join(f.root, "srv"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.put("srv/disk.img", "")
	f.put("srv/swapfile", "")
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(f.root, "srv"), &st); err != nil {
		t.Fatal(err)
	}
	// The fake disk's partition is the filesystem the temporary directory
	// is on.
	fs := Dev(st.Dev)
	sys := "virtual/block/sdb"
	f.disk(sys, fakeDisk, 1<<21)
	part := fs
	mountinfo := "1 0 62:0 / / rw - ext4 /dev/vda rw\n"
	if fs.Major() == 0 {
		part = MakeDev(60, 17)
		f.node("sdb1", part)
		mountinfo += "2 1 " + fs.String() + " / /srv rw - btrfs /dev/sdb1 rw\n"
	}
	f.put("sys/devices/"+sys+"/sdb1/dev", part.String()+"\n")
	f.put("sys/devices/"+sys+"/sdb1/partition", "1\n")
	f.link("sys/dev/block/"+part.String(), "../../devices/"+sys+"/sdb1")
	f.put("proc/self/mountinfo", mountinfo)
	f.put("proc/swaps", "Filename Type Size Used Priority\n/srv/swapfile file 100 0 -2\n")
	f.loop("loop0", fakeLoop, "/srv/disk.img")
	got := uses(t, f)
	for _, want := range []string{
		`"/dev/sdb1" holds "/srv/disk.img", the backing file of loop device "/dev/loop0"`,
		`"/dev/sdb1" holds "/srv/swapfile", which is active swap`,
	} {
		if !strings.Contains(strings.Join(got, "\n"), want) {
			t.Errorf("uses %q lack %q", got, want)
		}
	}
	// The image's loop device, whatever it is called.
	f.link("srv/other-name.img", "disk.img")
	if loops, err := LoopsOf(f.root, filepath.Join(f.root, "srv/other-name.img")); err != nil || !reflect.DeepEqual(loops, []string{"/dev/loop0"}) {
		t.Errorf("LoopsOf = %q, %v, want /dev/loop0", loops, err)
	}
	if loops, err := LoopsOf(f.root, filepath.Join(f.root, "srv/swapfile")); err != nil || len(loops) != 0 {
		t.Errorf("LoopsOf a file no loop device reads = %q, %v", loops, err)
	}
}

func TestJoinAndDirect(t *testing.T) {
	t.Parallel()
	us := []Use{{Kind: Mounted, Dev: "/dev/sdb1", Point: "/"}, {Kind: Busy, Dev: "/dev/sdb"}}
	if got := Join(us); got != `"/dev/sdb1" is mounted at "/"; "/dev/sdb" is busy: the kernel holds it for a filesystem, swap or another device` {
		t.Errorf("Join = %q", got)
	}
	if !us[0].Direct() || (Use{Kind: Mounted, PID: 3}).Direct() || (Use{Kind: Mounted, On: "/dev/sdb1"}).Direct() {
		t.Error("Direct: only a use of the disk's own devices in this namespace is")
	}
}
