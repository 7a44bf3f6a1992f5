package baseimage

import (
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/bootfiles"
)

func TestPi4Kernel(t *testing.T) {
	t.Parallel()
	has := func(names ...string) func(string) bool {
		return func(n string) bool {
			for _, m := range names {
				if strings.EqualFold(m, n) {
					return true
				}
			}
			return false
		}
	}
	cases := []struct {
		name, config string
		files        []string
		want         string
		fromConfig   bool
	}{
		{"default 64-bit", "arm_64bit=1\n", []string{"kernel8.img"}, "kernel8.img", false},
		{"armhf image has kernel8 too", "", []string{"kernel7l.img", "kernel8.img"}, "kernel8.img", false},
		{"only kernel7l", "", []string{"kernel7l.img"}, "kernel7l.img", false},
		{"kernel= in pi4 section", "[pi4]\nkernel=u-boot.bin\n[all]\n", nil, "u-boot.bin", true},
		{"kernel= in all after pi4", "[pi4]\nkernel=a.img\n[all]\nkernel=b.img\n", nil, "b.img", true},
		{"kernel= for pi5 ignored", "[pi5]\nkernel=kernel_2712.img\n[all]\n", []string{"kernel8.img"}, "kernel8.img", false},
		{"kernel= for cm4 ignored", "[cm4]\nkernel=x.img\n", []string{"kernel8.img"}, "kernel8.img", false},
		{"top section applies", "kernel=top.img\n[pi3]\nkernel=pi3.img\n", nil, "top.img", true},
		{"commented out", "#kernel=x.img\n", []string{"kernel8.img"}, "kernel8.img", false},
		{"spaces and leading slash", "  kernel = /boot.img  \n", nil, "boot.img", true},
		{"CRLF", "[pi4]\r\nkernel=crlf.img\r\n", nil, "crlf.img", true},
		// This copy once took the last section header alone: a [pi4] after
		// [HDMI:0] combines with it, so not every Pi 4 boots hdmi.img.
		{"pi4 under an HDMI filter is not certain", "[HDMI:0]\n[pi4]\nkernel=hdmi.img\n", []string{"kernel8.img"}, "kernel8.img", false},
		{"kernel= in an included file", "[all]\ninclude extra.txt\n", nil, "included.img", true},
		{"include under [pi5] ignored", "[pi5]\ninclude extra.txt\n", []string{"kernel8.img"}, "kernel8.img", false},
	}
	for _, tc := range cases {
		read := bootfiles.Files{"config.txt": tc.config, "extra.txt": "kernel=included.img\n"}.Read
		got, fromConfig := pi4Kernel(read, has(tc.files...))
		if got != tc.want || fromConfig != tc.fromConfig {
			t.Errorf("%s: got %q (config %v), want %q (config %v)", tc.name, got, fromConfig, tc.want, tc.fromConfig)
		}
	}
}

func TestDpkgArch(t *testing.T) {
	t.Parallel()
	cases := []struct{ status, want string }{
		{"Package: a\nArchitecture: all\n\nPackage: dpkg\nArchitecture: armhf\n", "armhf"},
		{"Package: libc6\nArchitecture: arm64\n\nPackage: libc6\nArchitecture: armhf\n\nPackage: dpkg\nArchitecture: arm64\n", "arm64"},
		{"Package: foo\nArchitecture: armhf\n", "armhf"},
		{"Package: foo\nArchitecture: all\n", ""},
		{"", ""},
	}
	for _, tc := range cases {
		if got := dpkgArch([]byte(tc.status)); got != tc.want {
			t.Errorf("dpkgArch(%q) = %q, want %q", tc.status, got, tc.want)
		}
	}
}

func TestELFArch(t *testing.T) {
	t.Parallel()
	header := func(class, machine byte, flags uint32) []byte {
		b := make([]byte, 64)
		copy(b, []byte{0x7f, 'E', 'L', 'F', class, 1, 1})
		b[16], b[18], b[20] = 2, machine, 1
		if class == 1 {
			b[0x24], b[0x25], b[0x26], b[0x27] = byte(flags), byte(flags>>8), byte(flags>>16), byte(flags>>24)
			b[0x28] = 52
		} else {
			b[0x34] = 64
		}
		return b
	}
	cases := []struct {
		data []byte
		want string
	}{
		{header(2, 183, 0), "arm64"},
		{header(1, 40, 0x05000400), "armhf"},
		{header(1, 40, 0x05000200), "armel"},
		{header(2, 62, 0), "x86_64"},
	}
	for _, tc := range cases {
		got, err := elfArch(tc.data)
		if err != nil || got != tc.want {
			t.Errorf("elfArch = %q, %v; want %q", got, err, tc.want)
		}
	}
	if _, err := elfArch([]byte("#!/bin/sh\n")); err == nil {
		t.Error("a shell script parsed as ELF")
	}
}

func TestFATMountPoint(t *testing.T) {
	t.Parallel()
	cases := []struct{ fstab, want, wantErr string }{
		{"PARTUUID=1-01 /boot/firmware vfat defaults 0 2\n", "/boot/firmware", ""},
		{"# comment /boot vfat\nLABEL=boot\t/boot\tvfat\tdefaults\t0\t2\n", "/boot", ""},
		{"UUID=x /boot vfat d 0 2\nUUID=y /boot/firmware vfat d 0 2\n", "/boot/firmware", ""},
		{"UUID=x /efi vfat d 0 2\n", "", "at /efi"},
		{"proc /proc proc defaults 0 0\n", "", "mounts no vfat"},
	}
	for _, tc := range cases {
		got, err := fatMountPoint(tc.fstab)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want %q", tc.fstab, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.fstab, got, err, tc.want)
		}
	}
}

func TestParseOSRelease(t *testing.T) {
	t.Parallel()
	m := parseOSRelease([]byte("# c\nID=debian\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nNAME='Single'\nESC=\"a \\\"b\\\"\"\nbroken\n\n"))
	want := map[string]string{"ID": "debian", "PRETTY_NAME": "Debian GNU/Linux 13 (trixie)", "NAME": "Single", "ESC": `a "b"`}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %q, want %q", k, m[k], v)
		}
	}
	if len(m) != len(want) {
		t.Errorf("got %v", m)
	}
	if !isDebianFamily(map[string]string{"ID": "raspbian", "ID_LIKE": "debian"}) || isDebianFamily(map[string]string{"ID": "fedora"}) {
		t.Error("isDebianFamily")
	}
}

func FuzzPi4Kernel(f *testing.F) {
	f.Add("[pi4]\nkernel=u-boot.bin\n[all]\narm_64bit=1\n")
	f.Add("kernel=\n[")
	f.Fuzz(func(t *testing.T, config string) {
		name, fromConfig := pi4Kernel(bootfiles.Files{"config.txt": config}.Read, func(string) bool { return true })
		if !fromConfig && name != "kernel8.img" {
			t.Errorf("default kernel %q", name)
		}
		if strings.HasPrefix(name, "/") {
			t.Errorf("kernel %q keeps its leading slash", name)
		}
	})
}
