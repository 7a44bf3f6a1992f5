package flash

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fixture"
)

// loopFlash is the Options of a test: a loop device needs
// --allow-non-removable, and nobody types.
func loopFlash(img, dev string) Options {
	return Options{Image: img, Device: dev, Yes: true, AllowNonRemovable: true}
}

// builtCard is one card and its .bmap, built once for the flash tests.
func builtCard(t *testing.T) (path string, size int64) {
	t.Helper()
	path = buildBmapCard(t, "")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, st.Size()
}

func TestFlashZeroedDeviceEqualsImage(t *testing.T) {
	t.Parallel()
	img, size := builtCard(t)
	for _, bmap := range []bool{true, false} {
		t.Run(fmt.Sprintf("bmap=%v", bmap), func(t *testing.T) {
			image := img
			if !bmap {
				// The same image without its .bmap: its data ranges are written.
				image = filepath.Join(t.TempDir(), "copy.img")
				buildertest.Sh(t, "cp", "--sparse=always", img, image)
			}
			dev := buildertest.LoopDevice(t, size+4<<20, false)
			res, err := Write(context.Background(), loopFlash(image, dev))
			if err != nil {
				t.Fatal(err)
			}
			if res.FromBmap != bmap || !res.Verified || res.Written <= 0 || res.Written >= size {
				t.Errorf("flash: %+v, want from bmap %v, verified, fewer than %d bytes written", res, bmap, size)
			}
			// A loop device discards (punches holes): the gaps are.
			if res.Discarded <= 0 || res.Written+res.Discarded > size {
				t.Errorf("flash discarded %d bytes and wrote %d of %d, want the gaps discarded", res.Discarded, res.Written, size)
			}
			if buildertest.FileSum(t, dev, size) != buildertest.FileSum(t, img, size) {
				t.Errorf("%s after flash does not equal the image", dev)
			}
		})
	}
}

// TestFlashOverOldData flashes onto a device full of random bytes, with
// the .bmap and without: every range the .bmap maps equals the image, and
// both filesystems pass fsck, so the blocks left unwritten are ones no
// filesystem reads.
func TestFlashOverOldData(t *testing.T) {
	t.Parallel()
	img, size := builtCard(t)
	ranges, err := builder.ReadBmap(img+".bmap", size)
	if err != nil {
		t.Fatal(err)
	}
	for _, bmap := range []bool{true, false} {
		t.Run(fmt.Sprintf("bmap=%v", bmap), func(t *testing.T) {
			image := img
			if !bmap {
				image = filepath.Join(t.TempDir(), "copy.img")
				buildertest.Sh(t, "cp", "--sparse=always", img, image)
			}
			dev := buildertest.LoopDevice(t, size, true)
			// A loop device's discard zeroes: the old data must stay, as
			// on a card whose discard does not.
			opts := loopFlash(image, dev)
			opts.NoDiscard = true
			res, err := Write(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			if res.FromBmap != bmap {
				t.Errorf("from bmap %v, want %v", res.FromBmap, bmap)
			}
			requireMappedEqual(t, img, dev, ranges, "on "+dev)
			b, _ := os.Open(dev)
			defer b.Close()
			table, err := baseimage.ReadTable(b)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range table.Partitions {
				part := buildertest.Sh(t, "losetup", "--find", "--show", "--read-only", "--offset", strconv.FormatInt(p.Start, 10), "--sizelimit", strconv.FormatInt(p.Size, 10), dev)
				t.Cleanup(func() { exec.Command("losetup", "--detach", part).Run() })
				if baseimage.IsFAT(p.Type) {
					buildertest.Sh(t, "fsck.fat", "-n", part)
				} else {
					buildertest.Sh(t, "e2fsck", "-fn", part)
				}
			}
		})
	}
}

// TestFlashCompressedAndChecked flashes IMAGE.xz (decoded on the way,
// IMAGE.bmap found beside it) and refuses to call a card good when the
// image does not match its .sha256.
func TestFlashCompressedAndChecked(t *testing.T) {
	t.Parallel()
	img, size := builtCard(t)
	buildertest.Sh(t, "xz", "-T0", "-1", "-k", img)
	dev := buildertest.LoopDevice(t, size, false)
	res, err := Write(context.Background(), loopFlash(img+".xz", dev))
	if err != nil {
		t.Fatal(err)
	}
	if !res.FromBmap || buildertest.FileSum(t, dev, size) != buildertest.FileSum(t, img, size) {
		t.Errorf("flash of %s.xz: from bmap %v; the device equals the image: %v", img, res.FromBmap, buildertest.FileSum(t, dev, size) == buildertest.FileSum(t, img, size))
	}
	leftovers, _ := filepath.Glob(filepath.Join(os.TempDir(), ".nixpi-flash-*.img"))
	for _, l := range leftovers {
		if st, err := os.Stat(l); err == nil && st.Size() == size {
			t.Errorf("decoded image %s left behind", l)
		}
	}

	damaged := filepath.Join(t.TempDir(), "card.img")
	buildertest.Sh(t, "cp", "--sparse=always", img, damaged)
	if err := os.WriteFile(damaged+".sha256", []byte(strings.Repeat("ab", 32)+"  card.img\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Write(context.Background(), loopFlash(damaged, dev))
	if !errors.Is(err, ErrCardIncomplete) || !strings.Contains(err.Error(), "is damaged: its sha256 is") {
		t.Errorf("flash of an image that does not match its .sha256: %v, want it named damaged and the card incomplete", err)
	}

	// With a .bmap its range hashes check what is written.
	buildertest.Sh(t, "cp", img+".bmap", damaged+".bmap")
	os.Remove(damaged + ".sha256")
	ranges, err := builder.ReadBmap(damaged+".bmap", size)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(damaged, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	last := ranges[len(ranges)-1]
	_, err = f.WriteAt([]byte("changed"), last.Start)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, err = Write(context.Background(), loopFlash(damaged, dev))
	if !errors.Is(err, ErrCardIncomplete) || !strings.Contains(err.Error(), fmt.Sprintf("does not match its .bmap in bytes %d-%d", last.Start, last.End)) {
		t.Errorf("flash of an image changed after its .bmap: %v, want the range named and the card incomplete", err)
	}
}

// TestFlashRefusals checks that every refusal names what it found and
// leaves the device as it was.
func TestFlashRefusals(t *testing.T) {
	t.Parallel()
	img, size := builtCard(t)
	// A device that holds a card already, so it has partitions.
	card := buildertest.LoopDevice(t, size, false)
	buildertest.Sh(t, "dd", "if="+img, "of="+card, "bs=4M", "conv=fsync", "status=none")
	buildertest.Sh(t, "blockdev", "--rereadpt", card)
	buildertest.WaitPartition(t, card, card+"p1")
	small := buildertest.LoopDevice(t, size-4<<20, false)
	mounted := buildertest.LoopDevice(t, size, false)
	buildertest.Sh(t, "dd", "if="+img, "of="+mounted, "bs=4M", "conv=fsync", "status=none")
	buildertest.Sh(t, "blockdev", "--rereadpt", mounted)
	buildertest.WaitPartition(t, mounted, mounted+"p2")
	mnt := t.TempDir()
	buildertest.Sh(t, "mount", "-t", "ext4", "-o", "ro,noload", mounted+"p2", mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	// Swap in use: the kernel writes it whenever it likes, flash must not.
	swap := buildertest.LoopDevice(t, 64<<20, false)
	buildertest.Sh(t, "mkswap", swap)
	buildertest.Sh(t, "swapon", swap)
	t.Cleanup(func() { exec.Command("swapoff", swap).Run() })
	// Held: device-mapper built on the disk (as LVM or dm-crypt would be).
	held := buildertest.LoopDevice(t, size, true)
	holder, heldRoot := heldBy(t, held, size)
	// Read by a loop device whose filesystem is mounted: the loop driver
	// claims nothing, so only the loop devices' records tell.
	backing := buildertest.LoopDevice(t, size, false)
	buildertest.Sh(t, "dd", "if="+img, "of="+backing, "bs=4M", "conv=fsync", "status=none")
	over := buildertest.Sh(t, "losetup", "--find", "--show", "--partscan", "--read-only", backing)
	t.Cleanup(func() { exec.Command("losetup", "--detach", over).Run() })
	buildertest.WaitPartition(t, over, over+"p2")
	overMnt := t.TempDir()
	buildertest.Sh(t, "mount", "-t", "ext4", "-o", "ro,noload", over+"p2", overMnt)
	t.Cleanup(func() { exec.Command("umount", overMnt).Run() })
	// Two loop devices stacked on a partition, the top one mounted.
	stacked := buildertest.LoopDevice(t, size, false)
	buildertest.Sh(t, "dd", "if="+img, "of="+stacked, "bs=4M", "conv=fsync", "status=none")
	buildertest.Sh(t, "blockdev", "--rereadpt", stacked)
	buildertest.WaitPartition(t, stacked, stacked+"p2")
	lower := buildertest.Sh(t, "losetup", "--find", "--show", "--read-only", stacked+"p2")
	t.Cleanup(func() { exec.Command("losetup", "--detach", lower).Run() })
	upper := buildertest.Sh(t, "losetup", "--find", "--show", "--read-only", lower)
	t.Cleanup(func() { exec.Command("losetup", "--detach", upper).Run() })
	upperMnt := t.TempDir()
	buildertest.Sh(t, "mount", "-t", "ext4", "-o", "ro,noload", upper, upperMnt)
	t.Cleanup(func() { exec.Command("umount", upperMnt).Run() })

	for _, tc := range []struct {
		name string
		dev  string
		opts func(*Options)
		want string
	}{
		{"partition", card + "p1", nil, `is partition 1 of "` + card + `": flash writes a whole disk, pass ` + card},
		{"mounted", mounted, nil, `p2" is mounted at "` + mnt + `" (umount "` + mnt + `" first, or pass --unmount)`},
		{"too small", small, nil, "smaller than the image"},
		{"swap", swap, nil, fmt.Sprintf("%q is active swap (swapoff %q first)", swap, swap)},
		{"held", held, func(o *Options) { o.Root = heldRoot }, fmt.Sprintf("%q is held by %q", held, "/dev/"+holder)},
		{"backing a mounted loop device", backing, nil, fmt.Sprintf("%q is the backing file of loop device %q (detach it first: losetup --detach %q); %q (on %q) is mounted at %q",
			backing, over, over, over+"p2", backing, overMnt)},
		{"stacked loop devices", stacked, nil, fmt.Sprintf("%q is the backing file of loop device %q (detach it first: losetup --detach %q); %q (on %q) is the backing file of loop device %q (detach it first: losetup --detach %q); %q (on %q) is mounted at %q",
			stacked+"p2", lower, lower, lower, stacked+"p2", upper, upper, upper, lower, upperMnt)},
		{"non-removable", card, func(o *Options) { o.AllowNonRemovable = false }, "not removable"},
		{"not confirmed", card, func(o *Options) {
			o.Yes = false
			o.Confirm = func(description, name string) (string, error) {
				if !strings.Contains(description, "partition /dev/"+filepath.Base(card)+"p1") {
					t.Errorf("description %q lacks the current partitions", description)
				}
				return "sda", nil
			}
		}, `confirmation "sda" is not "` + filepath.Base(card) + `"`},
		{"no confirmation possible", card, func(o *Options) { o.Yes = false }, "no confirmation"},
		{"not a device", img, nil, "is not a block device"},
		{"open exclusively", card, func(*Options) {
			f, err := os.OpenFile(card, os.O_RDONLY|syscall.O_EXCL, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
		}, "it is in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := buildertest.FileSum(t, tc.dev, size-4<<20)
			opts := loopFlash(img, tc.dev)
			if tc.opts != nil {
				tc.opts(&opts)
			}
			_, err := Write(context.Background(), opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("flash %s: %v, want an error saying %q", tc.dev, err, tc.want)
			}
			if errors.Is(err, ErrCardIncomplete) {
				t.Errorf("a refusal says the card is incomplete: %v", err)
			}
			if buildertest.FileSum(t, tc.dev, size-4<<20) != before {
				t.Errorf("refusal changed %s", tc.dev)
			}
		})
	}
}

// heldBy makes dev (of size bytes) held by another device and returns
// the holder's name and the Root flash must look from: a device-mapper
// linear device over dev, removed at cleanup, when the kernel has
// device-mapper; else a copy of what /sys and /proc say of dev, with a
// holder added, for a kernel without (the refusal reads only those).
func heldBy(t *testing.T, dev string, size int64) (holder, root string) {
	t.Helper()
	if _, err := exec.LookPath("dmsetup"); err == nil && exists("/sys/class/misc/device-mapper") {
		name := fmt.Sprintf("nixpi-flash-test-%d-%s", os.Getpid(), filepath.Base(dev))
		buildertest.Sh(t, "dmsetup", "create", name, "--table", fmt.Sprintf("0 %d linear %s 0", size/512, dev))
		t.Cleanup(func() { exec.Command("dmsetup", "remove", "--retry", name).Run() })
		holders, err := os.ReadDir("/sys/class/block/" + filepath.Base(dev) + "/holders")
		if err != nil || len(holders) != 1 {
			t.Fatalf("holders of %s after dmsetup create: %v, %v; want one", dev, holders, err)
		}
		return holders[0].Name(), "/"
	}
	t.Logf("no device-mapper in this kernel: %s is given a holder in a copy of /sys", dev)
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	root = t.TempDir()
	sys := filepath.Join(root, "sys/devices/virtual/block", filepath.Base(dev))
	real := "/sys/class/block/" + filepath.Base(dev)
	for _, attr := range []string{"size", "removable", "queue/logical_block_size", "loop/backing_file"} {
		b, err := os.ReadFile(filepath.Join(real, attr))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(sys, attr), b)
	}
	writeFile(t, filepath.Join(sys, "holders/dm-0"), nil)
	link := filepath.Join(root, "sys/dev/block", fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)))
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil || os.Symlink(sys, link) != nil {
		t.Fatal("sysfs link", err)
	}
	for _, f := range []string{"self/mountinfo", "swaps"} {
		b, err := os.ReadFile("/proc/" + f)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(root, "proc", f), b)
	}
	return "dm-0", root
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil || os.WriteFile(path, data, 0o644) != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// TestFlashFaults injects faults into real devices: a loop device whose
// backing file is on a tmpfs too small for the mapped data (its writes
// fail half way, as a card that dies does), and a loop device whose
// backing file is overwritten between writing and reading back (what a
// card that does not keep its data does). Both are failures that say the
// card is incomplete and where.
func TestFlashFaults(t *testing.T) {
	t.Parallel()
	img, size := builtCard(t)
	ranges, err := builder.ReadBmap(img+".bmap", size)
	if err != nil {
		t.Fatal(err)
	}
	var mapped int64
	for _, r := range ranges {
		mapped += r.End - r.Start
	}

	t.Run("write error", func(t *testing.T) {
		dir := t.TempDir()
		buildertest.Sh(t, "mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(mapped/2, 10), "nixpi-flash-test", dir)
		t.Cleanup(func() { exec.Command("umount", dir).Run() })
		file := filepath.Join(dir, "card.dev")
		if err := os.WriteFile(file, nil, 0o600); err != nil || os.Truncate(file, size) != nil {
			t.Fatal("create device file", err)
		}
		dev := buildertest.Sh(t, "losetup", "--find", "--show", file)
		t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
		_, err := Write(context.Background(), loopFlash(img, dev))
		if !errors.Is(err, ErrCardIncomplete) || !strings.Contains(err.Error(), "write "+strconv.Quote(dev)+" at byte ") {
			t.Fatalf("flash onto %s, which fails after %d of %d bytes: %v, want the write error, its byte and that the card is incomplete", dev, mapped/2, mapped, err)
		}
		t.Log(err)
	})

	t.Run("lost data", func(t *testing.T) {
		dev := buildertest.LoopDevice(t, size, false)
		backing := strings.TrimSpace(buildertest.Sh(t, "cat", "/sys/class/block/"+filepath.Base(dev)+"/loop/backing_file"))
		bad := ranges[len(ranges)/2].Start + 100
		opts := loopFlash(img, dev)
		opts.Progress = func(phase string, done, total int64) {
			if phase != "write" || done != total {
				return
			}
			f, err := os.OpenFile(backing, os.O_WRONLY, 0)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte("old data old data"), bad); err != nil {
				t.Error(err)
			}
		}
		_, err := Write(context.Background(), opts)
		want := fmt.Sprintf("verify: %s differs from the image at byte %d", dev, bad)
		if !errors.Is(err, ErrCardIncomplete) || !strings.Contains(err.Error(), want) {
			t.Fatalf("flash onto %s changed at byte %d after writing: %v, want %q and that the card is incomplete", dev, bad, err, want)
		}
	})
}

// With Unmount a card whose partition is mounted is unmounted, after the
// confirmation, and written.
func TestFlashUnmount(t *testing.T) {
	t.Parallel()
	img, size := builtCard(t)
	dev := buildertest.LoopDevice(t, size, false)
	buildertest.Sh(t, "dd", "if="+img, "of="+dev, "bs=4M", "conv=fsync", "status=none")
	buildertest.Sh(t, "blockdev", "--rereadpt", dev)
	buildertest.WaitPartition(t, dev, dev+"p2")
	mnt := t.TempDir()
	buildertest.Sh(t, "mount", "-t", "ext4", "-o", "ro,noload", dev+"p2", mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	opts := loopFlash(img, dev)
	opts.Unmount, opts.Yes = true, false
	opts.Confirm = func(description, name string) (string, error) {
		if !strings.Contains(description, fmt.Sprintf("mounted at %q: unmounted first", mnt)) {
			t.Errorf("description %q does not say %s will be unmounted", description, mnt)
		}
		return name, nil
	}
	if _, err := Write(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	if info, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(info), " "+mnt+" ") {
		t.Errorf("%s is still mounted", mnt)
	}
	if buildertest.FileSum(t, dev, size) != buildertest.FileSum(t, img, size) {
		t.Errorf("%s after flash --unmount does not equal the image", dev)
	}
}

func TestFlashInterrupted(t *testing.T) {
	t.Parallel()
	img, size := builtCard(t)
	dev := buildertest.LoopDevice(t, size, false)
	ctx, cancel := context.WithCancel(context.Background())
	opts := loopFlash(img, dev)
	opts.Progress = func(phase string, done, total int64) { cancel() }
	_, err := Write(ctx, opts)
	if !errors.Is(err, ErrCardIncomplete) || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("flash cancelled after the first write: %v, want interrupted, the card is incomplete", err)
	}
}

// TestFlashRefusesRootDisk points flash at the disk this system runs
// from. The checks must refuse it; were they to fail, the confirmation
// (answered wrongly here) still stands before any write.
func TestFlashRefusesRootDisk(t *testing.T) {
	t.Parallel()
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Skip(err)
	}
	var rootDev string
	for _, line := range strings.Split(string(mountinfo), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == "/" {
			rootDev = f[2]
		}
	}
	sys, err := filepath.EvalSymlinks("/sys/dev/block/" + rootDev)
	if err != nil {
		t.Skipf("/ is not on a block device (%s): %v", rootDev, err)
	}
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		sys = filepath.Dir(sys)
	}
	disk := "/dev/" + filepath.Base(sys)
	img := filepath.Join(t.TempDir(), "tiny.img")
	if err := os.WriteFile(img, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, unmount := range []bool{false, true} {
		_, err = Write(context.Background(), Options{Image: img, Device: disk, AllowNonRemovable: true, Unmount: unmount,
			Confirm: func(description, name string) (string, error) {
				t.Errorf("flash asked to confirm the root disk %s: its checks let it through", disk)
				return "", errors.New("refused by the test")
			}})
		if err == nil || !strings.Contains(err.Error(), "refusing "+disk) || !strings.Contains(err.Error(), "(it is the disk this system runs from)") && !unmount && !strings.Contains(err.Error(), "is mounted at") {
			t.Errorf("flash onto the root disk %s (unmount %v): %v, want it refused as mounted at /", disk, unmount, err)
		}
		t.Log(err)
	}
}

// Building and flashing in one go gives the card that build then flash
// gives, from a raw base, an xz one and one whose root only debugfs
// reads, with no image on the
// workstation meanwhile: the temporary directory never holds as much as
// the image, and nothing at the end.
func TestFlashBaseEqualsBuildThenFlash(t *testing.T) {
	t.Parallel()
	base := buildertest.WriteFixture(t, fixture.Options{Layout: fixture.LayoutBookworm, FATSize: fixture.MinFATSize}).Path
	buildertest.Sh(t, "xz", "-T0", "-1", "-k", base)
	// A root go-diskfs cannot read is read by debugfs, off the disk.
	old := buildertest.WriteFixture(t, fixture.Options{Layout: fixture.LayoutBullseye, Arch: fixture.ArchArmhf, FATSize: fixture.MinFATSize, RootFeatures: []string{"^metadata_csum"}}).Path
	for name, b := range map[string]string{"raw": base, "xz": base + ".xz", "debugfs": old} {
		t.Run(name, func(t *testing.T) {
			// The manifest names the base as given: build from the same.
			img := buildBmapCard(t, b)
			st, err := os.Stat(img)
			if err != nil {
				t.Fatal(err)
			}
			size := st.Size()
			separate := buildertest.LoopDevice(t, size, false)
			if _, err := Write(context.Background(), loopFlash(img, separate)); err != nil {
				t.Fatal(err)
			}
			oneGo := buildertest.LoopDevice(t, size, true)
			// Old data in the gaps: only the mapped blocks can equal.
			tmp := t.TempDir()
			opts := testOptions(t, b, filepath.Join(t.TempDir(), "unused.img"))
			flash := loopFlash("", oneGo)
			flash.TempDir = tmp
			peak := watchSize(t, tmp)
			built, res, err := Build(context.Background(), opts, flash)
			held := peak()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("decoder %s; %d of %d bytes written, %d discarded; %s held up to %d bytes", built.Decoder, res.Written, size, res.Discarded, tmp, held)
			if !res.Verified || res.Written <= 0 || res.Written >= size || built.Manifest == nil || built.Manifest.Base.Arch == "" {
				t.Errorf("build and flash: %+v, %+v: want the card written in part, verified, and its manifest", built, res)
			}
			if held <= 0 || held >= size/2 {
				t.Errorf("%s held up to %d bytes during build and flash of a %d-byte image, want some but well under half", tmp, held, size)
			}
			if left, _ := os.ReadDir(tmp); len(left) != 0 {
				t.Errorf("%s holds %v after build and flash, want nothing", tmp, left)
			}
			ranges, err := builder.ReadBmap(img+".bmap", size)
			if err != nil {
				t.Fatal(err)
			}
			requireMappedEqual(t, separate, oneGo, ranges, "of the card built and flashed in one go, from build then flash")
			var gaps int64
			for i, r := range ranges {
				if i > 0 {
					gaps += r.Start - ranges[i-1].End
				}
			}
			if res.Discarded < gaps {
				t.Errorf("discarded %d bytes, want the %d between the mapped ranges", res.Discarded, gaps)
			}
			// A loop device's discard zeroes: the whole card equals.
			if buildertest.FileSum(t, oneGo, size) != buildertest.FileSum(t, separate, size) {
				t.Errorf("build and flash in one go wrote a card other than build, then flash")
			}
		})
	}
	// A refused disk costs no build.
	flash := loopFlash("", base)
	if _, _, err := Build(context.Background(), testOptions(t, base, filepath.Join(t.TempDir(), "unused.img")), flash); err == nil || !strings.Contains(err.Error(), "is not a block device") {
		t.Errorf("build and flash onto a file: %v, want it refused", err)
	}
}

// watchSize polls the bytes that files in dir take (allocated, not their
// apparent size), those this process holds open there after removing them
// included, until the returned function is called, which says the most
// it saw.
func watchSize(t *testing.T, dir string) func() int64 {
	t.Helper()
	stop, done := make(chan struct{}), make(chan int64)
	allocated := func(path string) int64 {
		st, err := os.Stat(path)
		if err != nil || !st.Mode().IsRegular() {
			return 0
		}
		return st.Sys().(*syscall.Stat_t).Blocks * 512
	}
	go func() {
		var peak int64
		for {
			var total int64
			filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
				total += allocated(path)
				return nil
			})
			fds, _ := os.ReadDir("/proc/self/fd")
			for _, fd := range fds {
				fdPath := "/proc/self/fd/" + fd.Name()
				if target, err := os.Readlink(fdPath); err == nil && strings.HasPrefix(target, dir+"/") && strings.HasSuffix(target, " (deleted)") {
					total += allocated(fdPath)
				}
			}
			peak = max(peak, total)
			select {
			case <-stop:
				done <- peak
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return func() int64 { close(stop); return <-done }
}

// TestFlashBaseFaults: building onto a disk too small is refused before
// anything is written; a cancel while the base is decoded onto the disk,
// a disk that fails half way and data changed before the read-back all
// say the card is incomplete.
func TestFlashBaseFaults(t *testing.T) {
	t.Parallel()
	base := buildertest.WriteFixture(t, fixture.Options{Layout: fixture.LayoutBookworm, FATSize: fixture.MinFATSize}).Path
	st, err := os.Stat(base)
	if err != nil {
		t.Fatal(err)
	}
	size := st.Size()
	opts := func(t *testing.T) builder.Options {
		return testOptions(t, base, filepath.Join(t.TempDir(), "unused.img"))
	}
	// The boot partition's temporary file goes here, not where another
	// test looks for leftovers.
	loopFlash := func(img, dev string) Options {
		o := loopFlash(img, dev)
		o.TempDir = t.TempDir()
		return o
	}

	t.Run("too small", func(t *testing.T) {
		dev := buildertest.LoopDevice(t, size-4<<20, true)
		before := buildertest.FileSum(t, dev, size)
		_, _, err := Build(context.Background(), opts(t), loopFlash("", dev))
		if err == nil || errors.Is(err, ErrCardIncomplete) || !strings.Contains(err.Error(), "smaller than the image") || !strings.Contains(err.Error(), dev+" was not changed") {
			t.Errorf("build and flash onto a disk smaller than the image: %v, want it refused, unchanged", err)
		}
		if buildertest.FileSum(t, dev, size) != before {
			t.Errorf("the refusal changed %s", dev)
		}
	})

	t.Run("interrupted", func(t *testing.T) {
		dev := buildertest.LoopDevice(t, size, false)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		o := opts(t)
		o.Progress = func(done, total int64) {
			if done > size*3/4 {
				cancel()
			}
		}
		_, _, err := Build(ctx, o, loopFlash("", dev))
		if !errors.Is(err, ErrCardIncomplete) || !strings.Contains(err.Error(), "interrupted") {
			t.Errorf("build and flash cancelled while the root was written: %v, want interrupted, the card is incomplete", err)
		}
	})

	t.Run("write error", func(t *testing.T) {
		dir := t.TempDir()
		buildertest.Sh(t, "mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(16<<20, 10), "nixpi-flash-test", dir)
		t.Cleanup(func() { exec.Command("umount", dir).Run() })
		file := filepath.Join(dir, "card.dev")
		if err := os.WriteFile(file, nil, 0o600); err != nil || os.Truncate(file, size) != nil {
			t.Fatal("create device file", err)
		}
		dev := buildertest.Sh(t, "losetup", "--find", "--show", file)
		t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
		_, _, err := Build(context.Background(), opts(t), loopFlash("", dev))
		if !errors.Is(err, ErrCardIncomplete) || !strings.Contains(err.Error(), "write "+strconv.Quote(dev)+" at byte ") {
			t.Errorf("build and flash onto %s, which fails after 16 MiB: %v, want the write error, its byte and that the card is incomplete", dev, err)
		}
	})

	t.Run("lost data", func(t *testing.T) {
		dev := buildertest.LoopDevice(t, size, false)
		backing := strings.TrimSpace(buildertest.Sh(t, "cat", "/sys/class/block/"+filepath.Base(dev)+"/loop/backing_file"))
		flash := loopFlash("", dev)
		f, err := os.Open(base)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		ranges, err := builder.MappedRanges(f, size)
		if err != nil {
			t.Fatal(err)
		}
		// The root's last data (the root is the base's), which the
		// read-back reaches last.
		bad := ranges[len(ranges)-1].Start + 100
		changed := false
		flash.Progress = func(phase string, done, total int64) {
			if phase != "verify" || changed {
				return
			}
			changed = true
			f, err := os.OpenFile(backing, os.O_WRONLY, 0)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte("old data old data"), bad); err != nil {
				t.Error(err)
			}
		}
		_, _, err = Build(context.Background(), opts(t), flash)
		want := fmt.Sprintf("verify: %s differs from what was written at byte %d,", dev, bad/4096*4096)
		if !errors.Is(err, ErrCardIncomplete) || !strings.Contains(err.Error(), want) {
			t.Errorf("build and flash onto %s changed before the read-back: %v, want %q and that the card is incomplete", dev, err, want)
		}
		t.Log(err)
	})
}

// requireMappedEqual stops the test at the first range the bmap maps whose
// bytes in got differ from those in want.
func requireMappedEqual(t *testing.T, want, got string, ranges []builder.MappedRange, what string) {
	t.Helper()
	a, err := os.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := os.Open(got)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, r := range ranges {
		if !buildertest.SameRange(t, a, b, r.Start, r.End) {
			t.Fatalf("mapped bytes %d-%d differ %s", r.Start, r.End, what)
		}
	}
}

// TestFlashRefusesBeforeWriting: what flash can know is wrong before its
// first write is refused then, the disk as it was: a --sha256 the image
// does not have (also with a .bmap, whose range hashes check only what is
// written), a .bmap that leaves out what the card's filesystems read (the
// MBR only), and, building onto the disk, a base that is a nixpi card
// already or a --sha256 the base does not have.
func TestFlashRefusesBeforeWriting(t *testing.T) {
	t.Parallel()
	img, size := builtCard(t)
	wrong := strings.Repeat("ab", 32)
	mbrOnly := filepath.Join(t.TempDir(), "card.img")
	buildertest.Sh(t, "cp", "--sparse=always", img, mbrOnly)
	f, err := os.Open(mbrOnly)
	if err != nil {
		t.Fatal(err)
	}
	b, err := builder.EncodeBmap(f, size, []builder.Range{{Start: 0, End: builder.BmapBlockSize}})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, mbrOnly+".bmap", b)
	base := buildertest.WriteFixture(t, fixture.Options{Layout: fixture.LayoutBookworm, FATSize: fixture.MinFATSize}).Path
	build := func(base, sha string) builder.Options {
		o := testOptions(t, base, filepath.Join(t.TempDir(), "unused.img"))
		o.SHA256 = sha
		return o
	}
	for _, tc := range []struct {
		name string
		run  func(dev string) error
		want []string
	}{
		{"--sha256 with a .bmap", func(dev string) error {
			o := loopFlash(img, dev)
			o.SHA256 = wrong
			_, err := Write(context.Background(), o)
			return err
		}, []string{"checksum mismatch", wrong, "--sha256"}},
		{"--sha256 without a .bmap", func(dev string) error {
			plain := filepath.Join(t.TempDir(), "card.img")
			buildertest.Sh(t, "cp", "--sparse=always", img, plain)
			o := loopFlash(plain, dev)
			o.SHA256 = wrong
			_, err := Write(context.Background(), o)
			return err
		}, []string{"checksum mismatch", wrong}},
		{"a bmap of the MBR only", func(dev string) error {
			_, err := Write(context.Background(), loopFlash(mbrOnly, dev))
			return err
		}, []string{fmt.Sprintf("bmap %q does not map bytes ", mbrOnly+".bmap"), "partition 1's FAT", "rebuild the image with nixpi build", "or remove"}},
		{"--base that is a nixpi card", func(dev string) error {
			_, _, err := Build(context.Background(), build(img, ""), loopFlash("", dev))
			return err
		}, []string{"already has a nixpi/ directory", "DEV was not changed"}},
		{"--base with a --sha256 it does not have", func(dev string) error {
			_, _, err := Build(context.Background(), build(base, wrong), loopFlash("", dev))
			return err
		}, []string{"checksum mismatch", wrong}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := buildertest.LoopDevice(t, size, true)
			before := buildertest.FileSum(t, dev, size)
			err := tc.run(dev)
			for _, want := range tc.want {
				want = strings.ReplaceAll(want, "DEV", dev)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("%v, want an error saying %q", err, want)
				}
			}
			if errors.Is(err, ErrCardIncomplete) {
				t.Errorf("refused after writing: %v", err)
			}
			if buildertest.FileSum(t, dev, size) != before {
				t.Errorf("the refusal changed %s", dev)
			}
		})
	}
}

// TestFlashBaseFinishesAsBuild builds one unverified xz base, with a
// config whose extra_module only nixpi's bracket check reads, with `nixpi
// build` (its early card) and onto a disk with `flash --base`: the disk
// holds the card's bytes, and both say the same warnings, each once, the
// one about the base before the disk is claimed.
func TestFlashBaseFinishesAsBuild(t *testing.T) {
	t.Parallel()
	base := buildertest.WriteFixture(t, fixture.Options{Layout: fixture.LayoutBookworm, FATSize: fixture.MinFATSize}).Path
	buildertest.Sh(t, "xz", "-T2", "-0", "-k", base)
	xz := base + ".xz"
	dir := t.TempDir()
	config := filepath.Join(dir, "module.toml")
	writeFile(t, config, []byte(buildertest.Config+"\n[nixos]\nextra_module = \"{ ... }: { }\"\n"))
	options := func(out string, w *buildertest.Warnings) builder.Options {
		o := testOptions(t, xz, out)
		o.Config, o.Warn = config, w.Warn
		return o
	}
	built := &buildertest.Warnings{}
	card := filepath.Join(dir, "card.img")
	res, err := builder.Build(context.Background(), options(card, built))
	if err != nil {
		t.Fatal(err)
	}
	if res.Early != builder.EarlyUsed {
		t.Errorf("nixpi build: early card %q, want %q", res.Early, builder.EarlyUsed)
	}
	st, err := os.Stat(card)
	if err != nil {
		t.Fatal(err)
	}
	dev := buildertest.LoopDevice(t, st.Size(), false)
	flashed := &buildertest.Warnings{}
	opts := loopFlash("", dev)
	opts.TempDir = t.TempDir()
	var before []string
	opts.Yes, opts.Confirm = false, func(description, name string) (string, error) {
		before = flashed.Msgs()
		return name, nil
	}
	got, _, err := Build(context.Background(), options(filepath.Join(dir, "unused.img"), flashed), opts)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"nixos.extra_module was checked by nixpi's own bracket check only",
		"nothing verifies the base image " + xz + " (no --sha256, no " + xz + ".sha256 beside it)",
		"the unverified base's sha256 is " + buildertest.FileSHA256(t, xz) + ":",
	}
	for what, w := range map[string]*buildertest.Warnings{"nixpi build": built, "flash --base": flashed} {
		if len(w.Msgs()) != len(want) {
			t.Errorf("%s: warnings %q, want %d", what, w.Msgs(), len(want))
			continue
		}
		for i := range want {
			if !strings.HasPrefix(w.Msgs()[i], want[i]) {
				t.Errorf("%s: warning %d is %q, want it to start %q", what, i, w.Msgs()[i], want[i])
			}
		}
	}
	if !slices.Equal(built.Msgs(), flashed.Msgs()) {
		t.Errorf("flash --base warns\n%q\nnixpi build\n%q", flashed.Msgs(), built.Msgs())
	}
	if len(before) != 2 || !strings.HasPrefix(before[1], want[1]) {
		t.Errorf("warnings before the confirmation: %q, want the config's and the base's", before)
	}
	if !reflect.DeepEqual(got.Manifest, res.Manifest) {
		t.Errorf("flash --base manifest\n%+v\nnixpi build's\n%+v", got.Manifest, res.Manifest)
	}
	if buildertest.FileSum(t, dev, st.Size()) != buildertest.FileSum(t, card, st.Size()) {
		t.Errorf("flash --base wrote a card other than nixpi build's")
	}
}
