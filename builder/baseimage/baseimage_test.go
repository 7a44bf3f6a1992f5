package baseimage_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fixture"
)

func needTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mkfs.fat", "mcopy", "mkfs.ext4", "sfdisk", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian packages dosfstools, mtools, e2fsprogs, fdisk): %v", tool, err)
		}
	}
}

func writeFixture(t *testing.T, opts fixture.Options) (string, *fixture.Image) {
	t.Helper()
	needTools(t)
	path := filepath.Join(t.TempDir(), "base.img")
	if opts.FATSize == 0 {
		opts.FATSize = 64 << 20
	}
	img, err := fixture.WriteContext(context.Background(), path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return path, img
}

func inspect(t *testing.T, path string) (*baseimage.Base, error) {
	t.Helper()
	return inspectWith(t, path, baseimage.ReaderAuto)
}

func inspectWith(t *testing.T, path string, reader baseimage.Reader) (*baseimage.Base, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return baseimage.InspectContext(context.Background(), f, st.Size(), baseimage.Options{Reader: reader})
}

func run(t *testing.T, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}

func TestIdentifiesFixtures(t *testing.T) {
	t.Parallel()
	for _, layout := range fixture.Layouts {
		for _, arch := range []fixture.Arch{fixture.ArchArm64, fixture.ArchArmhf} {
			t.Run(fmt.Sprintf("%s-%s", layout, arch), func(t *testing.T) {
				t.Parallel()
				path, img := writeFixture(t, fixture.Options{Layout: layout, Arch: arch})
				b, err := inspect(t, path)
				if err != nil {
					t.Fatal(err)
				}
				if b.RootReader != "go-diskfs" {
					t.Errorf("read the root with %s, want go-diskfs first", b.RootReader)
				}
				viaDebugfs, err := inspectWith(t, path, baseimage.ReaderDebugfs)
				if err != nil {
					t.Fatal(err)
				}
				viaDebugfs.RootReader = b.RootReader
				if !reflect.DeepEqual(b, viaDebugfs) {
					t.Errorf("go-diskfs and debugfs disagree:\n%+v\n%+v", b, viaDebugfs)
				}
				if b.DiskID != img.DiskID {
					t.Errorf("DiskID %08x, want %08x", b.DiskID, img.DiskID)
				}
				if b.Boot.Start != img.BootPart.Start || b.Boot.Size != img.BootPart.Size || b.Boot.Type != 0x0c {
					t.Errorf("Boot %+v, want %+v type 0x0c", b.Boot, img.BootPart)
				}
				if b.Root.Start != img.RootPart.Start || b.Root.Size != img.RootPart.Size || b.Root.Type != 0x83 {
					t.Errorf("Root %+v, want %+v type 0x83", b.Root, img.RootPart)
				}
				if b.FATLabel != img.FATLabel || b.FATMount != img.FATMount {
					t.Errorf("FAT %q at %q, want %q at %q", b.FATLabel, b.FATMount, img.FATLabel, img.FATMount)
				}
				if b.Arch != string(arch) || b.ArchSource != "/var/lib/dpkg/status" {
					t.Errorf("Arch %q from %s, want %q", b.Arch, b.ArchSource, arch)
				}
				if b.Kernel != "kernel8.img" {
					t.Errorf("Kernel %q", b.Kernel)
				}
				if strings.TrimSpace(b.Cmdline) != img.Cmdline {
					t.Errorf("Cmdline %q, want %q", b.Cmdline, img.Cmdline)
				}
				if want := fmt.Sprintf("root=PARTUUID=%s ", b.PartUUID(2)); !strings.Contains(b.Cmdline, want) {
					t.Errorf("cmdline %q lacks %q", b.Cmdline, want)
				}
				if got := strings.Contains(b.ConfigTxt, "\narm_64bit=1\n"); got != (arch == fixture.ArchArm64) {
					t.Errorf("config.txt arm_64bit=1 present = %v for %s", got, arch)
				}
				if b.OSRelease["VERSION_CODENAME"] != string(layout) || b.PrettyName == "" {
					t.Errorf("os-release %v", b.OSRelease)
				}
				if b.Systemd != "/usr/lib/systemd/systemd" {
					t.Errorf("Systemd %q", b.Systemd)
				}
			})
		}
	}
}

func TestArchFromELFWithoutDpkgStatus(t *testing.T) {
	t.Parallel()
	for _, arch := range []fixture.Arch{fixture.ArchArm64, fixture.ArchArmhf} {
		t.Run(string(arch), func(t *testing.T) {
			t.Parallel()
			path, _ := writeFixture(t, fixture.Options{Arch: arch, OmitRootFiles: []string{"/var/lib/dpkg/status"}})
			b, err := inspect(t, path)
			if err != nil {
				t.Fatal(err)
			}
			if b.Arch != string(arch) || b.ArchSource != "/usr/bin/true" {
				t.Errorf("Arch %q from %q, want %q from /usr/bin/true", b.Arch, b.ArchSource, arch)
			}
		})
	}
}

// TestShellThroughSymlinks reads /bin/sh, which is usr/bin -> dash: two
// symbolic links that go-diskfs alone does not follow.
func TestShellThroughSymlinks(t *testing.T) {
	t.Parallel()
	path, _ := writeFixture(t, fixture.Options{Arch: fixture.ArchArmhf,
		OmitRootFiles: []string{"/var/lib/dpkg/status", "/usr/bin/true"}})
	b, err := inspect(t, path)
	if err != nil {
		t.Fatal(err)
	}
	if b.Arch != "armhf" || b.ArchSource != "/bin/sh" {
		t.Errorf("Arch %q from %q, want armhf from /bin/sh", b.Arch, b.ArchSource)
	}
}

func TestRejects(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		opts    fixture.Options
		mutate  func(t *testing.T, path string, img *fixture.Image)
		wantErr error
		wantMsg string
	}{
		{
			name: "no partition table",
			mutate: func(t *testing.T, path string, img *fixture.Image) {
				zero(t, path, 0, 512)
			},
			wantErr: baseimage.ErrNoPartitionTable, wantMsg: "no boot signature",
		},
		{
			name: "empty partition table",
			mutate: func(t *testing.T, path string, img *fixture.Image) {
				zero(t, path, 446, 64)
			},
			wantErr: baseimage.ErrNoPartitionTable, wantMsg: "lists no partitions",
		},
		{
			name:    "gpt",
			opts:    fixture.Options{Table: fixture.TableGPT},
			wantErr: baseimage.ErrGPT, wantMsg: "GPT partition table: nixpi expects a Raspberry Pi OS image with an MBR table",
		},
		{
			name: "truncated",
			mutate: func(t *testing.T, path string, img *fixture.Image) {
				if err := os.Truncate(path, img.RootPart.Start+img.RootPart.Size/2); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: baseimage.ErrTruncated, wantMsg: "partition 2 ends at byte",
		},
		{
			name: "partition 1 not FAT type",
			mutate: func(t *testing.T, path string, img *fixture.Image) {
				run(t, "sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--part-type", path, "1", "83")
			},
			wantErr: baseimage.ErrNoFAT, wantMsg: "partition 1 has type 0x83",
		},
		{
			name: "partition 1 not formatted",
			mutate: func(t *testing.T, path string, img *fixture.Image) {
				zero(t, path, img.BootPart.Start, 4096)
			},
			wantErr: baseimage.ErrNoFAT, wantMsg: "no filesystem boot sector",
		},
		{
			name: "FAT16",
			mutate: func(t *testing.T, path string, img *fixture.Image) {
				run(t, "mkfs.fat", "-F", "16", "--offset", fmt.Sprint(img.BootPart.Start/512), path, fmt.Sprint(img.BootPart.Size/1024))
			},
			wantErr: baseimage.ErrNoFAT, wantMsg: "partition 1 is FAT16",
		},
		{
			name:    "Pi 5 only",
			opts:    fixture.Options{OmitBootFiles: []string{"start4.elf"}},
			wantErr: baseimage.ErrPi5Only, wantMsg: "no start4.elf, which a Pi 4 needs",
		},
		{
			name:    "no start4.elf",
			opts:    fixture.Options{OmitBootFiles: []string{"start4.elf", "bcm2712-rpi-5-b.dtb", "kernel_2712.img"}},
			wantErr: baseimage.ErrMissingBootFile, wantMsg: "start4.elf is not on the boot partition",
		},
		{
			name:    "no config.txt",
			opts:    fixture.Options{OmitBootFiles: []string{"config.txt"}},
			wantErr: baseimage.ErrMissingBootFile, wantMsg: "config.txt is not on the boot partition",
		},
		{
			name:    "no cmdline.txt",
			opts:    fixture.Options{OmitBootFiles: []string{"cmdline.txt"}},
			wantErr: baseimage.ErrMissingBootFile, wantMsg: "cmdline.txt is not on the boot partition",
		},
		{
			name:    "no kernel",
			opts:    fixture.Options{OmitBootFiles: []string{"kernel8.img"}},
			wantErr: baseimage.ErrNoKernel, wantMsg: "found none of kernel8.img",
		},
		{
			name: "config.txt names a missing kernel",
			mutate: func(t *testing.T, path string, img *fixture.Image) {
				cfg := filepath.Join(t.TempDir(), "config.txt")
				if err := os.WriteFile(cfg, []byte("[pi4]\nkernel=u-boot-rpi4.bin\n[all]\narm_64bit=1\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				run(t, "mcopy", "-o", "-i", fmt.Sprintf("%s@@%d", path, img.BootPart.Start), cfg, "::config.txt")
			},
			wantErr: baseimage.ErrNoKernel, wantMsg: "config.txt says kernel=u-boot-rpi4.bin",
		},
		{
			name:    "no systemd",
			opts:    fixture.Options{OmitRootFiles: []string{"/usr/lib/systemd/systemd"}},
			wantErr: baseimage.ErrNoSystemd, wantMsg: "neither /usr/lib/systemd/systemd nor /lib/systemd/systemd",
		},
		{
			name:    "no os-release",
			opts:    fixture.Options{OmitRootFiles: []string{"/etc/os-release", "/usr/lib/os-release"}},
			wantErr: baseimage.ErrNotLinuxRoot, wantMsg: "/etc/os-release",
		},
		{
			name:    "no fstab",
			opts:    fixture.Options{OmitRootFiles: []string{"/etc/fstab"}},
			wantErr: baseimage.ErrNotLinuxRoot, wantMsg: "/etc/fstab",
		},
		{
			name: "partition 2 not ext4",
			mutate: func(t *testing.T, path string, img *fixture.Image) {
				zero(t, path, img.RootPart.Start, 4096)
			},
			wantErr: baseimage.ErrNotLinuxRoot, wantMsg: "no ext2/3/4 filesystem",
		},
		{
			name: "partition 2 not Linux type",
			mutate: func(t *testing.T, path string, img *fixture.Image) {
				run(t, "sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--part-type", path, "2", "7")
			},
			wantErr: baseimage.ErrNotLinuxRoot, wantMsg: "partition 2 has type 0x07",
		},
		{
			name: "no userland architecture",
			opts: fixture.Options{OmitRootFiles: []string{"/var/lib/dpkg/status", "/usr/bin/true", "/usr/bin/dash"}},
			// /bin/sh dangles once dash is gone.
			wantErr: baseimage.ErrUnsupportedArch, wantMsg: "found no Architecture",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path, img := writeFixture(t, tc.opts)
			if tc.mutate != nil {
				tc.mutate(t, path, img)
			}
			before := buildertest.FileSHA256(t, path)
			for _, reader := range []baseimage.Reader{baseimage.ReaderAuto, baseimage.ReaderDebugfs} {
				b, err := inspectWith(t, path, reader)
				if err == nil {
					t.Fatalf("Inspect (%s) accepted it: %+v", reader, b)
				}
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("%s: error %q does not wrap %q", reader, err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantMsg) {
					t.Errorf("%s: error %q does not say %q", reader, err, tc.wantMsg)
				}
			}
			if buildertest.FileSHA256(t, path) != before {
				t.Error("Inspect changed the image")
			}
		})
	}
}

func zero(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, n), off); err != nil {
		t.Fatal(err)
	}
}

func TestTooSmall(t *testing.T) {
	t.Parallel()
	_, err := baseimage.Inspect(strings.NewReader("tiny"), 4)
	if !errors.Is(err, baseimage.ErrNoPartitionTable) {
		t.Errorf("got %v", err)
	}
}

// TestExt4GoDiskfsCannotRead covers root filesystems go-diskfs v1.9.4 cannot
// read: without metadata_csum (older pi-gen images) it refuses them, with
// inline_data it panics. Inspect falls back to debugfs and still identifies
// them; with go-diskfs alone it fails with a clear error, not a panic.
func TestExt4GoDiskfsCannotRead(t *testing.T) {
	t.Parallel()
	for _, features := range [][]string{{"^metadata_csum"}, {"inline_data"}} {
		t.Run(strings.Join(features, ","), func(t *testing.T) {
			t.Parallel()
			path, _ := writeFixture(t, fixture.Options{Layout: fixture.LayoutBullseye, Arch: fixture.ArchArmhf, RootFeatures: features})
			b, err := inspect(t, path)
			if err != nil {
				t.Fatal(err)
			}
			if b.RootReader != "debugfs" || b.Arch != "armhf" || b.FATMount != "/boot" || b.OSRelease["VERSION_CODENAME"] != "bullseye" {
				t.Errorf("got %s %s %s %v", b.RootReader, b.Arch, b.FATMount, b.OSRelease)
			}
			// go-diskfs alone: a clear error, never a panic. (Should a newer
			// go-diskfs read these, this fails, and the fallback can go.)
			_, err = inspectWith(t, path, baseimage.ReaderGoDiskfs)
			if !errors.Is(err, baseimage.ErrNotLinuxRoot) {
				t.Errorf("go-diskfs alone: %v, want ErrNotLinuxRoot", err)
			}
		})
	}
}
