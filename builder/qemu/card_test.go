package qemu

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestGuestCmdline(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in, want string
	}{
		{
			name: "raspberry pi os bookworm with hook",
			in:   "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait systemd.run=/boot/firmware/nixpi/nixpi-firstboot systemd.run_success_action=reboot systemd.unit=kernel-command-line.target\n",
			want: "console=ttyAMA0 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait systemd.run=/boot/firmware/nixpi/nixpi-firstboot systemd.run_success_action=reboot systemd.unit=kernel-command-line.target",
		},
		{
			name: "console late in the line keeps its place",
			in:   "root=/dev/mmcblk0p2 console=tty1 rootwait",
			want: "root=/dev/mmcblk0p2 console=ttyAMA0 rootwait",
		},
		{
			name: "no console at all gets the serial one",
			in:   "root=PARTUUID=00000000-02 rootwait",
			want: "console=ttyAMA0 root=PARTUUID=00000000-02 rootwait",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := GuestCmdline(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("GuestCmdline(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
	if _, err := GuestCmdline(" \n"); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty cmdline.txt: err = %v, want an error saying it is empty", err)
	}
}

func TestParseConfigTxt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want BootFiles
	}{
		{"stock bookworm", "dtparam=audio=on\nauto_initramfs=1\narm_64bit=1\n[cm4]\notg_mode=1\n[all]\n", BootFiles{"kernel8.img", "initramfs8"}},
		{"no initramfs", "arm_64bit=1\n", BootFiles{"kernel8.img", ""}},
		{"explicit kernel and initramfs", "kernel=vmlinuz-6.1\ninitramfs initrd.img-6.1 followkernel\n", BootFiles{"vmlinuz-6.1", "initrd.img-6.1"}},
		{"other models' sections ignored", "[pi5]\nkernel=kernel_2712.img\n[pi4]\nkernel=k4.img # comment\n[all]\n", BootFiles{"k4.img", ""}},
		{"last setting wins", "kernel=a.img\n[all]\nkernel=b.img\nauto_initramfs=1\n", BootFiles{"b.img", ""}},
		{"auto initramfs follows kernel name", "kernel=kernel_2712.img\nauto_initramfs=1\n", BootFiles{"kernel_2712.img", "initramfs_2712"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseConfigTxt(tc.in); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func mbrSector(diskID uint32, entries ...[3]uint32) []byte {
	s := make([]byte, 512)
	binary.LittleEndian.PutUint32(s[440:], diskID)
	for i, e := range entries {
		off := 446 + 16*i
		s[off+4] = byte(e[0])
		binary.LittleEndian.PutUint32(s[off+8:], e[1])
		binary.LittleEndian.PutUint32(s[off+12:], e[2])
	}
	s[510], s[511] = 0x55, 0xaa
	return s
}

func TestParseMBR(t *testing.T) {
	t.Parallel()
	m, err := ParseMBR(mbrSector(0x4e639091, [3]uint32{0x0c, 16384, 1048576}, [3]uint32{0x83, 1064960, 4194304}))
	if err != nil {
		t.Fatal(err)
	}
	if m.DiskID != "4e639091" {
		t.Errorf("disk id %q, want 4e639091", m.DiskID)
	}
	boot, err := m.BootPartition()
	if err != nil {
		t.Fatal(err)
	}
	if boot.Offset != 8<<20 || boot.Size != 512<<20 {
		t.Errorf("boot partition %+v, want offset 8 MiB size 512 MiB", boot)
	}
	if len(m.Partitions) != 2 || m.Partitions[1].Offset != 1064960*512 {
		t.Errorf("partitions %+v", m.Partitions)
	}

	bad := []struct {
		name   string
		sector []byte
		want   string
	}{
		{"no signature", make([]byte, 512), "55 aa"},
		{"gpt", mbrSector(0, [3]uint32{0xee, 1, 100}), "GPT"},
	}
	for _, tc := range bad {
		if _, err := ParseMBR(tc.sector); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
	m, err = ParseMBR(mbrSector(1, [3]uint32{0x83, 2048, 100}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.BootPartition(); err == nil || !strings.Contains(err.Error(), "0x83") {
		t.Errorf("linux partition 1: err = %v, want it to name type 0x83", err)
	}
}

// TestEncodeMBRReadBySfdisk checks the table the base image gets with
// util-linux's own reader, not just with ParseMBR.
func TestEncodeMBRReadBySfdisk(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("sfdisk"); err != nil {
		t.Skip("sfdisk not installed (apt-get install -y fdisk)")
	}
	parts := []Partition{{Type: 0x0c, Offset: 8 << 20, Size: 512 << 20}, {Type: 0x83, Offset: 520 << 20, Size: 100 << 20}}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, EncodeMBR(0x4e639091, parts), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 620<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sfdisk", "--dump", img).CombinedOutput()
	if err != nil {
		t.Fatalf("sfdisk --dump: %v: %s", err, out)
	}
	for _, want := range []string{
		"label: dos", "label-id: 0x4e639091",
		"start=       16384, size=     1048576, type=c",
		"start=     1064960, size=      204800, type=83",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("sfdisk --dump lacks %q:\n%s", want, out)
		}
	}
	m, err := ReadMBR(img)
	if err != nil {
		t.Fatal(err)
	}
	if m.DiskID != "4e639091" || len(m.Partitions) != 2 || m.Partitions[1] != parts[1] {
		t.Errorf("ReadMBR = %+v, want disk id 4e639091 and %+v", m, parts)
	}
}
