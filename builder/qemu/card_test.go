package qemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/firstboot/bootfiles"
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
	files := func(kernel, initrd string) BootFiles {
		return BootFiles{Kernel: kernel, Initrd: initrd, Cmdline: "cmdline.txt"}
	}
	for _, tc := range []struct {
		name    string
		in      string
		tryboot bool
		want    BootFiles
	}{
		{"stock bookworm", "dtparam=audio=on\nauto_initramfs=1\narm_64bit=1\n[cm4]\notg_mode=1\n[all]\n", false, files("kernel8.img", "initramfs8")},
		{"no initramfs", "arm_64bit=1\n", false, files("kernel8.img", "")},
		{"explicit kernel and initramfs", "kernel=vmlinuz-6.1\ninitramfs initrd.img-6.1 followkernel\n", false, files("vmlinuz-6.1", "initrd.img-6.1")},
		{"other models' sections ignored", "[pi5]\nkernel=kernel_2712.img\n[pi4]\nkernel=k4.img\n[all]\n", false, files("k4.img", "")},
		// This copy once cut values at '#' and took the last section header
		// alone. The firmware has comments only at the start of a line, and
		// [tryboot] then [pi4] are both in force until [all].
		{"no comment after a value", "kernel=k4.img # comment\n", false, files("k4.img # comment", "")},
		{"a model filter keeps [tryboot]", "kernel=a.img\n[tryboot]\n[pi4]\nkernel=t.img\n[all]\n", false, files("a.img", "")},
		{"an include is followed", "kernel=a.img\ninclude extra.txt\n", false, files("included.img", "initramfs8")},
		{"last setting wins", "kernel=a.img\n[all]\nkernel=b.img\nauto_initramfs=1\n", false, files("b.img", "")},
		{"auto initramfs follows kernel name", "kernel=kernel_2712.img\nauto_initramfs=1\n", false, files("kernel_2712.img", "initramfs_2712")},
		{"the SSD's, with U-Boot and the armstub", "[pi4]\nkernel=u-boot-rpi4.bin\nenable_gic=1\narmstub=armstub8-gic.bin\n[all]\narm_64bit=1\n", false,
			BootFiles{Kernel: "u-boot-rpi4.bin", Armstub: "armstub8-gic.bin", Cmdline: "cmdline.txt"}},
		{"the device's tryboot.txt", "[all]\nkernel=nixpi/trial/u-boot-rpi4.bin\narmstub=nixpi/trial/armstub8-gic.bin\narm_64bit=1\n", true,
			BootFiles{Kernel: "nixpi/trial/u-boot-rpi4.bin", Armstub: "nixpi/trial/armstub8-gic.bin", Cmdline: "cmdline.txt"}},
		{"[tryboot] applies in a tryboot boot only", "kernel=a.img\n[tryboot]\nkernel=t.img\ncmdline=trial.txt\n[all]\n", true,
			BootFiles{Kernel: "t.img", Cmdline: "trial.txt"}},
		{"[tryboot] ignored otherwise", "kernel=a.img\n[tryboot]\nkernel=t.img\ncmdline=trial.txt\n[all]\n", false, files("a.img", "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			read := bootfiles.Files{"config.txt": tc.in, "extra.txt": "kernel=included.img\ninitramfs initramfs8 followkernel\n"}.Read
			if got := ParseConfigTxt(read, "config.txt", tc.tryboot); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestEncodeMBRReadBySfdisk checks the table the base image gets with
// util-linux's own reader and with the host's one (baseimage.ReadTable).
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
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	table, err := baseimage.ReadTable(f)
	if err != nil {
		t.Fatal(err)
	}
	if table.DiskID != 0x4e639091 || len(table.Partitions) != 2 {
		t.Fatalf("ReadTable = %+v, want disk id 4e639091 and two partitions", table)
	}
	for i, p := range table.Partitions {
		if p.Type != parts[i].Type || p.Start != parts[i].Offset || p.Size != parts[i].Size {
			t.Errorf("partition %d = %+v, want %+v", i+1, p, parts[i])
		}
	}
}
