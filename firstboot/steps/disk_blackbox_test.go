package steps_test

// Blackbox tests of the disk steps (target, partition, format, mount) on
// loop devices with the real tools: sgdisk, sfdisk, wipefs, partx,
// mkfs.fat, mkswap, mkfs.btrfs, btrfs, mount, swapon. They need root and
// skip with a message otherwise. This kernel has no vfat driver, so the one
// FAT mount (/mnt/boot) cannot happen here: the tests assert its exact argv
// and its failure, everything else for real; QEMU e2e covers the FAT mount.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixpi/nixpi/firstboot/blockdev"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/steps"
	"github.com/nixpi/nixpi/firstboot/system"
)

const (
	diskTestSize = 3 << 30
	diskTestSwap = 64 << 20
	diskTestRAM  = 1 << 30 // what "preflight" recorded; unused while swap_size is fixed
)

// diskRequireLoop skips unless the test can create loop devices.
func diskRequireLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: loop-device disk tests need root (CI runs them as root)")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("skipping: no loop device support here (%v)", err)
	}
	for _, tool := range []string{"losetup", "sgdisk", "sfdisk", "wipefs", "partx", "mkfs.fat", "fsck.fat", "mkswap", "mkfs.btrfs", "btrfs", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s is not installed (apt-get install gdisk fdisk dosfstools btrfs-progs e2fsprogs)", tool)
		}
	}
}

// diskLoop is a sparse image file attached to a loop device with
// partition scanning. Cleanup turns its swap off, unmounts everything from
// it and detaches it.
func diskLoop(t *testing.T, size int64) (dev, img string) {
	t.Helper()
	// libblkid's cache (/run/blkid) outlives a detached loop device; a new
	// one with the same derived UUIDs would look like a duplicate to
	// mkfs.btrfs. On the device /run starts empty at every boot.
	t.Setenv("BLKID_FILE", filepath.Join(t.TempDir(), "blkid.tab"))
	img = filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, err := exec.Command("losetup", "--find", "--show", "--partscan", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		diskUnmountAll(t, dev, "")
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
		// Detaching finishes asynchronously; the next test may get the
		// same loop device.
		backing := filepath.Join("/sys/block", filepath.Base(dev), "loop/backing_file")
		for i := 0; i < 100; i++ {
			if _, err := os.Stat(backing); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("%s is still attached 5s after losetup --detach", dev)
	})
	return dev, img
}

// diskUnmountAll is a simulated power cut's effect on the kernel: swap off
// and every mount gone, for mounts from dev's partitions or under dir.
func diskUnmountAll(t *testing.T, dev, dir string) {
	t.Helper()
	swaps, _ := blockdev.ReadSwaps("/")
	for _, s := range swaps {
		if strings.HasPrefix(s, dev+"p") {
			if out, err := exec.Command("swapoff", s).CombinedOutput(); err != nil {
				t.Errorf("swapoff %s: %v: %s", s, err, out)
			}
		}
	}
	mounts, err := disk.ReadMountInfo("/")
	if err != nil {
		t.Fatal(err)
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		m := mounts[i]
		if strings.HasPrefix(m.Source, dev+"p") || m.Source == dev || (dir != "" && strings.HasPrefix(m.MountPoint, dir+"/")) {
			if out, err := exec.Command("umount", m.MountPoint).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", m.MountPoint, err, out)
			}
		}
	}
}

// diskRoot is a device root for the steps: a temp dir whose dev, proc and
// sys are the host's, so /mnt and the btrfs work dir live in the temp dir.
func diskRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"dev", "proc", "sys"} {
		if err := os.Symlink("/"+d, filepath.Join(root, d)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// diskRecorder runs commands for real and records their argv.
type diskRecorder struct {
	system.ExecRunner
	mu    sync.Mutex
	calls [][]string
	// after, when set, is called after each command has run.
	after func(argv []string)
}

func (r *diskRecorder) Output(ctx context.Context, argv ...string) ([]byte, error) {
	r.mu.Lock()
	r.calls = append(r.calls, slices.Clone(argv))
	r.mu.Unlock()
	out, err := r.ExecRunner.Output(ctx, argv...)
	if r.after != nil {
		r.after(argv)
	}
	return out, err
}

// destructive returns the recorded commands that change a disk or the
// kernel's view of it (everything but the read-only probes).
func (r *diskRecorder) destructive() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.calls {
		base := filepath.Base(c[0])
		readOnly := base == "lsblk" || base == "blkid" ||
			(base == "wipefs" && slices.Contains(c, "--no-act")) ||
			(base == "sfdisk" && slices.Contains(c, "--json")) ||
			(base == "btrfs" && len(c) > 1 && c[1] == "inspect-internal")
		if !readOnly {
			out = append(out, system.QuoteArgv(c))
		}
	}
	return out
}

func diskTestConfig() *config.Config {
	cfg := config.Default()
	cfg.Layout.SwapSize = config.SwapSize{Bytes: diskTestSwap}
	return cfg
}

func diskTestEnv(t *testing.T, root string, cfg *config.Config, target string, state *journal.State) (*engine.Env, *diskRecorder) {
	rec := &diskRecorder{}
	if state == nil {
		state = &journal.State{RAMBytes: diskTestRAM}
	}
	return &engine.Env{
		Config:         cfg,
		Root:           root,
		BootDir:        "/boot/firmware",
		Run:            rec,
		Tools:          system.DefaultTools(),
		Progress:       func(f string, a ...any) { t.Logf(f, a...) },
		State:          state,
		TargetOverride: target,
	}, rec
}

func diskSteps() []engine.Step {
	return []engine.Step{steps.NewTarget(), steps.NewPartition(), steps.NewFormat(), steps.NewMount()}
}

// diskRunSequence is what the engine does with each step: probe, and run it
// when not done; a step the journal shows interrupted (redo) is run again
// from its start without probing. After each step that finished it calls
// saved, as the engine saves State in the journal at every event; running,
// when set, learns which step is under way.
func diskRunSequence(ctx context.Context, env *engine.Env, saved func(), redo string, running *string) (ran []string, err error) {
	for _, s := range diskSteps() {
		if s.Name() != redo {
			done, why, err := s.Probe(ctx, env)
			if err != nil {
				return ran, fmt.Errorf("%s: probe: %w", s.Name(), err)
			}
			if done {
				env.Logf("%s: %s, skipping", s.Name(), why)
				continue
			}
		}
		ran = append(ran, s.Name())
		env.Redo = s.Name() == redo
		if running != nil {
			*running = s.Name()
		}
		if err := s.Run(ctx, env); err != nil {
			return ran, fmt.Errorf("%s: %w", s.Name(), err)
		}
		if saved != nil {
			saved()
		}
	}
	return ran, nil
}

// hostHasVFAT says whether this kernel can mount FAT at all.
func hostHasVFAT() bool {
	data, _ := os.ReadFile("/proc/filesystems")
	return slices.ContainsFunc(strings.Split(string(data), "\n"), func(l string) bool { return strings.HasSuffix(l, "\tvfat") })
}

// diskCheckFATMountOnly accepts a sequence error only when it is the boot
// mount failing on a kernel without vfat.
func diskCheckFATMountOnly(t *testing.T, err error, root, bootNode string) {
	t.Helper()
	if hostHasVFAT() {
		if err != nil {
			t.Fatalf("sequence failed: %v", err)
		}
		return
	}
	want := fmt.Sprintf("mount: mount %s at %q", bootNode, filepath.Join(root, "mnt/boot"))
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "vfat") {
		t.Fatalf("want only the FAT mount to fail on this kernel without vfat (%s ...), got: %v", want, err)
	}
	if hint := engine.HintOf(err); !strings.Contains(hint, "vfat") {
		t.Errorf("hint for the failed FAT mount = %q, want one naming the missing vfat driver", hint)
	}
}

// diskSpec is a disk's state by spec: table, IDs, types, names,
// filesystems, labels, UUIDs, subvolumes.
type diskSpec struct {
	Table  string
	DiskID string
	Parts  []partSpec
	Subvol []string
}

type partSpec struct {
	Start, Size         int64
	Type, GUID, Name    string
	FSType, Label, UUID string
}

func (s diskSpec) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s id %s subvolumes %v\n", s.Table, s.DiskID, s.Subvol)
	for _, p := range s.Parts {
		fmt.Fprintf(&b, "  %+v\n", p)
	}
	return b.String()
}

func readDiskSpec(t *testing.T, dev string) diskSpec {
	t.Helper()
	ctx := context.Background()
	run := system.ExecRunner{}
	table, sigs, err := disk.ReadTable(ctx, run, system.DefaultTools(), dev)
	if err != nil {
		t.Fatal(err)
	}
	if table == nil {
		var types []string
		for _, s := range sigs {
			types = append(types, s.Type)
		}
		return diskSpec{Table: "none: " + strings.Join(types, ",")}
	}
	spec := diskSpec{Table: table.Label, DiskID: strings.ToLower(table.ID)}
	for _, p := range table.Partitions {
		ps := partSpec{Start: p.Start, Size: p.Size, Type: strings.ToUpper(p.Type), GUID: strings.ToLower(p.UUID), Name: p.Name}
		fs, err := disk.Signatures(ctx, run, "/usr/sbin/wipefs", p.Node)
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for _, s := range fs {
			if !slices.Contains(types, s.Type) {
				types = append(types, s.Type)
			}
		}
		ps.FSType = strings.Join(types, "+")
		if len(types) == 1 {
			ps.Label, ps.UUID = fs[0].Label, strings.ToLower(fs[0].UUID)
		}
		if ps.FSType == "btrfs" {
			spec.Subvol, err = disk.Subvolumes(ctx, run, "/usr/bin/btrfs", p.Node)
			if err != nil {
				t.Fatal(err)
			}
			sort.Strings(spec.Subvol)
		}
		spec.Parts = append(spec.Parts, ps)
	}
	return spec
}

// wantGPTSpec is the declarative result of the default layout (GPT, 500 MiB
// FAT32 boot, 64 MiB swap, btrfs root) on a blank 3 GiB disk without serial.
// The IDs are derived from the config and the disk's identity, so they are
// the same on every run.
var wantGPTSpec = diskSpec{
	Table:  "gpt",
	DiskID: "WANT",
	Parts: []partSpec{
		{Start: 2048, Size: 1024000, Type: disk.GPTTypeESP, Name: "boot", FSType: "vfat", Label: "boot"},
		{Start: 1026048, Size: 131072, Type: disk.GPTTypeSwap, Name: "swap", FSType: "swap", Label: "swap"},
		{Start: 1157120, Size: 5132288, Type: disk.GPTTypeLinux, Name: "root", FSType: "btrfs", Label: "root"},
	},
	Subvol: []string{"@", "@home", "@nix"},
}

// diskCheckMounted checks the mounts and swap the mount step makes (all but
// the FAT mount when the kernel cannot do it).
func diskCheckMounted(t *testing.T, root, dev string) {
	t.Helper()
	mounts, err := disk.ReadMountInfo("/")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct{ at, root string }{{"mnt", "/@"}, {"mnt/nix", "/@nix"}, {"mnt/home", "/@home"}} {
		m := disk.MountAt(mounts, filepath.Join(root, want.at))
		if m == nil || m.Source != dev+"p3" || m.FSType != "btrfs" || m.Root != want.root {
			t.Errorf("mount at %s = %+v, want btrfs %s subvolume %s", want.at, m, dev+"p3", want.root)
		}
	}
	if hostHasVFAT() {
		if m := disk.MountAt(mounts, filepath.Join(root, "mnt/boot")); m == nil || m.Source != dev+"p1" {
			t.Errorf("mount at mnt/boot = %+v, want vfat %s", m, dev+"p1")
		}
	}
	swaps, _ := blockdev.ReadSwaps("/")
	if !slices.Contains(swaps, dev+"p2") {
		t.Errorf("swap %s is not on (active: %v)", dev+"p2", swaps)
	}
}

// fileSHA256 is a sha256 of a sparse image's content: the file size, then
// every 64 KiB block that is not all zeros, with its offset. Holes read as
// zeros and are skipped, so a 2 GiB mostly-empty disk is hashed in
// milliseconds; two images hash the same exactly when their bytes are equal.
func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil { // settle the extents the loop device wrote
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	const block = 64 << 10
	h := sha256.New()
	fmt.Fprintf(h, "size %d\n", fi.Size())
	buf := make([]byte, block)
	zero := make([]byte, block)
	fd := int(f.Fd())
	for off := int64(0); off < fi.Size(); {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			break // ENXIO: only holes after off
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		for b := data / block * block; b < hole; b += block {
			n, err := f.ReadAt(buf, b)
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if !bytes.Equal(buf[:n], zero[:n]) {
				fmt.Fprintf(h, "block %d\n", b)
				h.Write(buf[:n])
			}
		}
		off = (hole + block - 1) / block * block
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestDiskDigestSeesWrites is the positive control for fileSHA256: one
// byte written through the loop device changes the digest.
func TestDiskDigestSeesWrites(t *testing.T) {
	diskRequireLoop(t)
	dev, img := diskLoop(t, 64<<20)
	before := fileSHA256(t, img)
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{1}, 40<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if after := fileSHA256(t, img); after == before {
		t.Fatal("a byte written through the loop device did not change the digest")
	}
}

func TestDiskStepsBlankDiskTwice(t *testing.T) {
	diskRequireLoop(t)
	ctx := context.Background()
	dev, _ := diskLoop(t, diskTestSize)
	root := diskRoot(t)
	t.Cleanup(func() { diskUnmountAll(t, dev, root) })

	before := readDiskSpec(t, dev)
	if before.Table != "none: " {
		t.Fatalf("fresh disk: %v", before)
	}
	env, _ := diskTestEnv(t, root, diskTestConfig(), dev, nil)
	ran, err := diskRunSequence(ctx, env, nil, "", nil)
	diskCheckFATMountOnly(t, err, root, dev+"p1")
	if want := []string{"target", "partition", "format", "mount"}; !reflect.DeepEqual(ran, want) {
		t.Errorf("first run ran %v, want %v", ran, want)
	}
	got := readDiskSpec(t, dev)
	diskCompareWithPlan(t, got, env)
	diskCheckMounted(t, root, dev)
	if out, err := exec.Command("fsck.fat", "-n", dev+"p1").CombinedOutput(); err != nil {
		t.Errorf("fsck.fat -n %s: %v: %s", dev+"p1", err, out)
	}
	rec := env.State.Target
	if rec == nil || rec.Dev != dev || rec.Size != diskTestSize || rec.GPTGUID != got.DiskID {
		t.Errorf("State.Target = %+v, want dev %s, size %d, GPT GUID %s", rec, dev, diskTestSize, got.DiskID)
	}

	// Second run, as on the next boot: every step probes done and nothing
	// destructive runs (but the FAT mount this kernel cannot do).
	env2, rec2 := diskTestEnv(t, root, diskTestConfig(), dev, env.State)
	ran, err = diskRunSequence(ctx, env2, nil, "", nil)
	diskCheckFATMountOnly(t, err, root, dev+"p1")
	var wantRan, wantCmds []string
	if !hostHasVFAT() {
		wantRan = []string{"mount"}
		wantCmds = []string{"/usr/sbin/fsck.fat -a -w " + dev + "p1", fmt.Sprintf("/usr/bin/mount -t vfat %s %s", dev+"p1", filepath.Join(root, "mnt/boot"))}
	}
	if !reflect.DeepEqual(ran, wantRan) {
		t.Errorf("second run ran %v, want %v (everything else probes done)", ran, wantRan)
	}
	if cmds := rec2.destructive(); !reflect.DeepEqual(cmds, wantCmds) {
		t.Errorf("second run changed things: %q, want only %q", cmds, wantCmds)
	}
	if again := readDiskSpec(t, dev); !reflect.DeepEqual(again, got) {
		t.Errorf("second run changed the disk:\nbefore %v\nafter  %v", got, again)
	}
	diskCheckMounted(t, root, dev)
}

// TestDiskStepsMountRepairsDirtyFAT: a power cut while the SSD's FAT was
// mounted leaves its dirty bit set; the next mount step repairs it with
// fsck.fat before mounting, so the boot filesystem ends clean.
func TestDiskStepsMountRepairsDirtyFAT(t *testing.T) {
	diskRequireLoop(t)
	ctx := context.Background()
	dev, _ := diskLoop(t, diskTestSize)
	root := diskRoot(t)
	t.Cleanup(func() { diskUnmountAll(t, dev, root) })
	env, _ := diskTestEnv(t, root, diskTestConfig(), dev, nil)
	_, err := diskRunSequence(ctx, env, nil, "", nil)
	diskCheckFATMountOnly(t, err, root, dev+"p1")
	diskUnmountAll(t, dev, root)
	boot := dev + "p1"
	// What Linux's vfat driver sets while mounted: bit 0 of the FAT32 boot
	// sector's state byte (offset 0x41).
	f, err := os.OpenFile(boot, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	state := make([]byte, 1)
	if _, err := f.ReadAt(state, 0x41); err != nil {
		t.Fatal(err)
	}
	state[0] |= 1
	if _, err := f.WriteAt(state, 0x41); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("fsck.fat", "-n", boot).CombinedOutput(); err == nil {
		t.Fatalf("fsck.fat -n finds the dirtied FAT clean, so this test shows nothing: %s", out)
	}

	var logs []string
	env2, _ := diskTestEnv(t, root, diskTestConfig(), dev, env.State)
	env2.Progress = func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }
	// The repair comes before the mount, so a kernel without vfat (this
	// host's may have none) still shows it.
	_, err = diskRunSequence(ctx, env2, nil, "", nil)
	diskCheckFATMountOnly(t, err, root, dev+"p1")
	if !slices.ContainsFunc(logs, func(l string) bool { return strings.Contains(l, "was not cleanly unmounted") }) {
		t.Errorf("no repair message in %q", logs)
	}
	if hostHasVFAT() {
		diskCheckMounted(t, root, dev)
	}
	diskUnmountAll(t, dev, root)
	if out, err := exec.Command("fsck.fat", "-n", boot).CombinedOutput(); err != nil {
		t.Errorf("after the mount step and a clean unmount, fsck.fat -n %s: %v: %s", boot, err, out)
	}
}

// diskCompareWithPlan checks the disk against the declarative spec, with the
// IDs the plan derives.
func diskCompareWithPlan(t *testing.T, got diskSpec, env *engine.Env) {
	t.Helper()
	plan, err := disk.NewPlan(env.Config.Layout, env.State.RAMBytes, disk.Identity{Size: diskTestSize, Seed: env.State.Target.IDSeed}, 512)
	if err != nil {
		t.Fatal(err)
	}
	want := wantGPTSpec
	want.DiskID = plan.DiskID
	want.Parts = slices.Clone(want.Parts)
	for i := range want.Parts {
		want.Parts[i].GUID = plan.Parts[i].GUID
		want.Parts[i].UUID = plan.Parts[i].FSUUID
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("disk differs from the spec:\ngot  %v\nwant %v", got, want)
	}
}

// diskWipeHint is what every refusal of a disk that is not blank says.
const diskWipeHint = "set `wipe = true` in nixpi/nixpi.toml if this disk may be erased"

// TestDiskStepsRefuse: each case is a disk set up with the real tools, a
// config, and the refusal it must get: the words of the message and of its
// hint, only the target step run, nothing destructive run, nothing
// recorded, and the disk's sha256 unchanged.
func TestDiskStepsRefuse(t *testing.T) {
	diskRequireLoop(t)
	const small = 1 << 30
	for _, tc := range []struct {
		name     string
		size     int64
		prepare  func(t *testing.T, dev, img, root string)
		config   func(*config.Config)
		partOnly bool     // --target names the disk's first partition
		want     []string // in the error, after the quoted device
		wantHint string
	}{
		{
			name:     "--target names a partition",
			size:     2 << 30,
			prepare:  func(t *testing.T, dev, img, root string) { diskExt4Partition(t, dev) },
			config:   func(c *config.Config) { c.Target.Wipe = true },
			partOnly: true,
			want:     []string{`p1" is a partition of "/dev/loop`, `: name the whole disk`},
			wantHint: "use --target /dev/loop",
		},
		{
			name: "data and wipe false",
			size: 2 << 30,
			prepare: func(t *testing.T, dev, img, root string) {
				diskMust(t, "sgdisk", "--new=1:2048:+100M", "--typecode=1:8300", dev)
				diskMust(t, "partx", "--update", dev)
				diskMust(t, "mkfs.ext4", "-q", "-L", "data", dev+"p1")
			},
			want:     []string{"it is not blank: it holds a partition table (gpt) at 512 B (0x200)", `1 partition: 1 (100.0 MiB at 1.0 MiB): ext4 label "data", `, " MiB used", "and target.wipe = false"},
			wantHint: diskWipeHint,
		},
		{
			name:     "filesystem on the whole disk and wipe false",
			size:     2 << 30,
			prepare:  func(t *testing.T, dev, img, root string) { diskMust(t, "mkfs.ext4", "-q", "-L", "data", dev) },
			want:     []string{`it holds a filesystem signature (ext4 label "data" uuid `, "at 1.1 KiB (0x438)"},
			wantHint: diskWipeHint,
		},
		{
			name: "filesystem at 2 MiB and no table",
			size: 2 << 30,
			prepare: func(t *testing.T, dev, img, root string) {
				diskMkfsAt(t, img, 2<<20, 256<<20, "mkfs.ext4", "-q", "-L", "shifted")
			},
			want:     []string{`a filesystem signature (ext4 label "shifted" uuid `, "at 2.0 MiB (0x200000)"},
			wantHint: diskWipeHint,
		},
		{
			name: "swap at 4 MiB and no table",
			size: 2 << 30,
			prepare: func(t *testing.T, dev, img, root string) {
				diskMkfsAt(t, img, 4<<20, 64<<20, "mkswap", "-L", "oldswap")
			},
			want:     []string{`a swap signature (swap label "oldswap"`, "at 4.0 MiB (0x400000)"},
			wantHint: diskWipeHint,
		},
		{
			name:     "LUKS on the whole disk",
			size:     2 << 30,
			prepare:  func(t *testing.T, dev, img, root string) { diskLUKSFormat(t, dev) },
			want:     []string{"it holds an encrypted volume header (crypto_LUKS uuid ", "at 0 B (0x0)"},
			wantHint: diskWipeHint,
		},
		{
			name: "LUKS at 16 MiB and no table",
			size: 2 << 30,
			prepare: func(t *testing.T, dev, img, root string) {
				loop := diskAttach(t, "--offset", fmt.Sprint(16<<20), "--sizelimit", fmt.Sprint(64<<20), img)
				diskLUKSFormat(t, loop)
			},
			want:     []string{"an encrypted volume header (crypto_LUKS uuid ", "at 16.0 MiB (0x1000000)"},
			wantHint: diskWipeHint,
		},
		{
			// At no usual partition start: its superblock lies in the window
			// sampled at every 16 MiB.
			name: "filesystem at 48 MiB and no table",
			size: 2 << 30,
			prepare: func(t *testing.T, dev, img, root string) {
				diskMkfsAt(t, img, 48<<20, 256<<20, "mkfs.ext4", "-q", "-L", "far")
			},
			want:     []string{"non-zero data at 48.0 MiB (0x3000400)"},
			wantHint: diskWipeHint,
		},
		{
			// The worst placement the bound allows: just after one sampled
			// window, one sector longer than the gap to the next.
			name: "random data in the middle",
			size: 2 << 30,
			prepare: func(t *testing.T, dev, img, root string) {
				off := int64(64*disk.BlankStrideBytes + disk.BlankWindowBytes)
				diskWriteAt(t, dev, off, diskRandom(t, disk.BlankStrideBytes-disk.BlankWindowBytes+512))
			},
			want:     []string{"it holds non-zero data at 1.0 GiB (0x41000000)"},
			wantHint: diskWipeHint,
		},
		{
			name: "primary GPT zeroed over a filesystem",
			size: 2 << 30,
			prepare: func(t *testing.T, dev, img, root string) {
				diskMust(t, "sgdisk", "--new=1:2048:+300M", dev)
				diskMust(t, "partx", "--update", dev)
				diskMust(t, "mkfs.btrfs", "-q", "-L", "photos", dev+"p1")
				diskWriteAt(t, dev, 0, make([]byte, 34*512))
				diskMust(t, "partx", "--delete", dev)
			},
			want: []string{"a GPT backup table (the primary is damaged) at 2.0 GiB (0x7ffffe00)",
				`a filesystem signature (btrfs label "photos" uuid `, "at 1.0 MiB (0x100000)"},
			wantHint: diskWipeHint,
		},
		{
			name: "backup GPT only and wipe false",
			size: 2 << 30,
			prepare: func(t *testing.T, dev, img, root string) {
				diskMust(t, "sgdisk", "--new=1:2048:+100M", dev)
				diskWriteAt(t, dev, 0, make([]byte, 34*512))
			},
			want:     []string{"it holds a GPT backup table (the primary is damaged) at 2.0 GiB (0x7ffffe00)"},
			wantHint: diskWipeHint,
		},
		{
			name:     "too small for the layout",
			size:     small,
			want:     []string{"is too small for the layout"},
			wantHint: "use a larger disk",
		},
		{
			name:     "smaller than min_size",
			size:     2 << 30,
			config:   func(c *config.Config) { c.Target.MinSize = 4 * config.GiB },
			want:     []string{"it is smaller than target.min_size = 4GiB"},
			wantHint: "lower target.min_size",
		},
		{
			name: "boot disk",
			size: 2 << 30,
			prepare: func(t *testing.T, dev, img, root string) {
				diskMust(t, "mkfs.ext4", "-q", "-L", "bootfs", dev)
				diskMountRO(t, dev, filepath.Join(root, "boot/firmware"))
			},
			config:   func(c *config.Config) { c.Target.Wipe = true },
			want:     []string{"it holds the boot partition (/boot/firmware)"},
			wantHint: "separate USB disk",
		},
		{
			name: "mounted",
			size: 2 << 30,
			prepare: func(t *testing.T, dev, img, root string) {
				diskMust(t, "sgdisk", "--new=1:2048:+100M", dev)
				diskMust(t, "partx", "--update", dev)
				diskMust(t, "mkfs.ext4", "-q", dev+"p1")
				diskMountRO(t, dev+"p1", filepath.Join(t.TempDir(), "elsewhere"))
			},
			config:   func(c *config.Config) { c.Target.Wipe = true },
			want:     []string{"p1\" is mounted at"},
			wantHint: "unmount it",
		},
		{
			name: "partition mounted through a second loop device",
			size: 2 << 30,
			prepare: func(t *testing.T, dev, img, root string) {
				diskExt4Partition(t, dev)
				loop := diskAttach(t, "--read-only", dev+"p1")
				diskMountRO(t, loop, filepath.Join(t.TempDir(), "through-loop"))
			},
			config:   func(c *config.Config) { c.Target.Wipe = true },
			want:     []string{`p1" is the backing file of loop device "/dev/loop`, `p1") is mounted at "`},
			wantHint: "detach the loop devices",
		},
		{
			// The loop driver claims nothing of what it reads: only the
			// loop devices' own records show this.
			name: "whole disk backing a loop device whose filesystem is mounted",
			size: 2 << 30,
			prepare: func(t *testing.T, dev, img, root string) {
				diskExt4Partition(t, dev)
				loop := diskAttach(t, "--read-only", "--partscan", dev)
				diskWaitNode(t, loop, loop+"p1")
				diskMountRO(t, loop+"p1", filepath.Join(t.TempDir(), "through-loop"))
			},
			config:   func(c *config.Config) { c.Target.Wipe = true },
			want:     []string{`" is the backing file of loop device "/dev/loop`, `p1" (on "/dev/loop`, `") is mounted at "`},
			wantHint: "detach the loop devices",
		},
		{
			name: "loop device over a loop device over a partition, mounted",
			size: 2 << 30,
			prepare: func(t *testing.T, dev, img, root string) {
				diskExt4Partition(t, dev)
				lower := diskAttach(t, "--read-only", dev+"p1")
				upper := diskAttach(t, "--read-only", lower)
				diskMountRO(t, upper, filepath.Join(t.TempDir(), "stacked"))
			},
			config: func(c *config.Config) { c.Target.Wipe = true },
			want: []string{`p1" is the backing file of loop device "/dev/loop`, `" (on "` + "/dev/loop", `p1") is the backing file of loop device "/dev/loop`,
				`") is mounted at "`},
			wantHint: "detach the loop devices",
		},
		{
			// No mount table shows the filesystem, and the file's path is
			// the detached filesystem's: the loop driver's st_dev of the
			// file names the partition.
			name: "loop device over a file on the disk, its filesystem lazily unmounted",
			size: 2 << 30,
			prepare: func(t *testing.T, dev, img, root string) {
				diskExt4Partition(t, dev)
				dir := filepath.Join(t.TempDir(), "lazy")
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				// noinit_itable: no inode tables zeroed behind the test's back.
				diskMust(t, "mount", "-o", "noinit_itable", dev+"p1", dir)
				file := filepath.Join(dir, "inner.img")
				if err := os.WriteFile(file, make([]byte, 1<<20), 0o600); err != nil {
					t.Fatal(err)
				}
				diskAttach(t, "--read-only", file)
				diskMust(t, "sync")
				diskMust(t, "umount", "--lazy", dir)
			},
			config:   func(c *config.Config) { c.Target.Wipe = true },
			want:     []string{`p1" holds "/inner.img", the backing file of loop device "/dev/loop`},
			wantHint: "detach the loop devices",
		},
		{
			name: "partition backing a loop device, nothing mounted",
			size: 2 << 30,
			prepare: func(t *testing.T, dev, img, root string) {
				diskExt4Partition(t, dev)
				diskAttach(t, "--read-only", dev+"p1")
			},
			config:   func(c *config.Config) { c.Target.Wipe = true },
			want:     []string{`p1" is the backing file of loop device "/dev/loop`},
			wantHint: "detach the loop devices",
		},
		{
			// No mount table shows it any more, but the filesystem lives on
			// while a process uses it: only the kernel's exclusive claim tells.
			name: "filesystem lazily unmounted while still in use",
			size: 2 << 30,
			prepare: func(t *testing.T, dev, img, root string) {
				diskExt4Partition(t, dev)
				dir := filepath.Join(t.TempDir(), "lazy")
				diskMountRO(t, dev+"p1", dir)
				user := exec.Command("sleep", "600")
				user.Dir = dir
				if err := user.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = user.Process.Kill(); _ = user.Wait() })
				diskMust(t, "umount", "--lazy", dir)
			},
			config:   func(c *config.Config) { c.Target.Wipe = true },
			want:     []string{`p1" is busy: the kernel holds it`},
			wantHint: "unmount it",
		},
		{
			name: "partition mounted in another mount namespace only",
			size: 2 << 30,
			prepare: func(t *testing.T, dev, img, root string) {
				diskExt4Partition(t, dev)
				diskMountInNamespace(t, dev+"p1")
			},
			config:   func(c *config.Config) { c.Target.Wipe = true },
			want:     []string{`p1" is mounted at "/mnt"`},
			wantHint: "in every container too",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dev, img := diskLoop(t, tc.size)
			root := diskRoot(t)
			if tc.prepare != nil {
				tc.prepare(t, dev, img, root)
			}
			cfg := diskTestConfig()
			if tc.config != nil {
				tc.config(cfg)
			}
			before := fileSHA256(t, img)
			target := dev
			if tc.partOnly {
				target = dev + "p1"
			}
			env, rec := diskTestEnv(t, root, cfg, target, nil)
			ran, err := diskRunSequence(ctx, env, nil, "", nil)
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", dev)) {
				t.Fatalf("want a refusal naming %q, got: %v", dev, err)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("refusal does not say %q: %v", want, err)
				}
			}
			if hint := engine.HintOf(err); !strings.Contains(hint, tc.wantHint) {
				t.Errorf("hint %q does not say %q", hint, tc.wantHint)
			}
			t.Logf("refused: %v\nhint: %s", err, engine.HintOf(err))
			if !reflect.DeepEqual(ran, []string{"target"}) {
				t.Errorf("ran %v, want only target", ran)
			}
			if cmds := rec.destructive(); len(cmds) > 0 {
				t.Errorf("a refusal ran commands that change things: %q", cmds)
			}
			if env.State.Target != nil {
				t.Errorf("a refused disk was recorded: %+v", env.State.Target)
			}
			diskUnmountAll(t, dev, "")
			if after := fileSHA256(t, img); after != before {
				t.Errorf("the refused disk changed: sha256 %s, was %s", after, before)
			}
		})
	}
}

// diskExt4Partition gives dev one 100 MiB partition with an ext4.
func diskExt4Partition(t *testing.T, dev string) {
	t.Helper()
	diskMust(t, "sgdisk", "--new=1:2048:+100M", dev)
	diskMust(t, "partx", "--update", dev)
	diskMust(t, "mkfs.ext4", "-q", "-L", "inuse", dev+"p1")
}

// diskWaitNode waits for the partition node path of disk to appear.
func diskWaitNode(t *testing.T, disk, path string) {
	t.Helper()
	for i := 0; ; i++ {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if i == 50 {
			t.Fatalf("%s did not appear", path)
		}
		if i == 5 {
			_ = exec.Command("partx", "--update", disk).Run()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// diskAttach attaches a loop device to file (losetup options first) and
// detaches it at cleanup.
func diskAttach(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("losetup", append([]string{"--find", "--show"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %q: %v: %s", args, err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", loop, err, out)
		}
	})
	return loop
}

// diskMountInNamespace mounts dev read-only at /mnt inside a new private
// mount namespace, held by a process that lives until cleanup: the host's
// own mount table never shows it.
func diskMountInNamespace(t *testing.T, dev string) {
	t.Helper()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount -o ro,noload "$0" /mnt && echo mounted && exec sleep 600`, dev)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("skipping: unshare: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line := make([]byte, 8)
	if n, _ := io.ReadFull(stdout, line); string(line[:n]) != "mounted\n" {
		t.Fatalf("mount in a private namespace failed (read %q)", line[:n])
	}
	if mounts, _ := disk.ReadMountInfo("/"); slices.ContainsFunc(mounts, func(m disk.Mount) bool { return m.Source == dev }) {
		t.Fatalf("%s shows in this namespace's mount table: the test would not test anything", dev)
	}
}

// TestDiskStepsRefusalThroughTheEngine: a refusal as the service sees it:
// the engine runs the disk steps on a disk with data in the middle, the
// outcome is a failure with exit status 1, nixpi/FAILED says what was found
// where and how to allow erasing it, and the disk is unchanged.
func TestDiskStepsRefusalThroughTheEngine(t *testing.T) {
	diskRequireLoop(t)
	dev, img := diskLoop(t, 2<<30)
	diskWriteAt(t, dev, 1<<30, diskRandom(t, 8<<20))
	root := diskRoot(t)
	if err := os.MkdirAll(filepath.Join(root, "boot/firmware"), 0o755); err != nil {
		t.Fatal(err)
	}
	before := fileSHA256(t, img)
	env, rec := diskTestEnv(t, root, diskTestConfig(), dev, nil)
	var out bytes.Buffer
	eng := &engine.Engine{Steps: diskSteps(), Env: env, Out: &out}
	outcome, err := eng.Run(context.Background(), []string{"target", "partition"}) // format needs packages
	if outcome != engine.Failed || outcome.ExitCode() != 1 || err == nil {
		t.Fatalf("Run = %v (exit %d), %v", outcome, outcome.ExitCode(), err)
	}
	marker, err := os.ReadFile(filepath.Join(root, "boot/firmware/nixpi/FAILED"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf("INSTALL STOPPED: step target failed in boot 1: refusing disk %q", dev),
		"it is not blank: it holds non-zero data at 1.0 GiB (0x40000000), and target.wipe = false",
		"fix: " + diskWipeHint,
	} {
		if !strings.Contains(string(marker), want) {
			t.Errorf("nixpi/FAILED does not say %q:\n%s", want, marker)
		}
	}
	if cmds := rec.destructive(); len(cmds) > 0 {
		t.Errorf("ran commands that change things: %q", cmds)
	}
	if after := fileSHA256(t, img); after != before {
		t.Error("the refused disk changed")
	}
}

// diskLUKSFormat makes a LUKS2 volume on dev with the real cryptsetup (a
// cheap key derivation: the header is what matters here).
func diskLUKSFormat(t *testing.T, dev string) {
	t.Helper()
	if _, err := exec.LookPath("cryptsetup"); err != nil {
		t.Skip("skipping: cryptsetup is not installed (apt-get install cryptsetup-bin)")
	}
	cmd := exec.Command("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", dev)
	cmd.Stdin = strings.NewReader("not a secret")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup luksFormat %s: %v: %s", dev, err, out)
	}
}

// diskMkfsAt runs a mkfs (argv, the device appended) on the region
// [off, off+size) of img, through a second loop device with that offset: a
// filesystem where no partition table says there is one.
func diskMkfsAt(t *testing.T, img string, off, size int64, argv ...string) {
	t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", "--offset", fmt.Sprint(off), "--sizelimit", fmt.Sprint(size), img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup --offset %d: %v: %s", off, err, out)
	}
	loop := strings.TrimSpace(string(out))
	defer func() {
		if out, err := exec.Command("losetup", "--detach", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", loop, err, out)
		}
	}()
	diskMust(t, append(argv, loop)...)
}

// diskWriteAt writes data at off of dev and syncs it.
func diskWriteAt(t *testing.T, dev string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func diskRandom(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func diskMust(t *testing.T, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
}

// diskMountRO mounts without writing to the device (ext4 with noload skips
// the journal), so the disk's sha256 stays comparable.
func diskMountRO(t *testing.T, dev, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	diskMust(t, "mount", "-o", "ro,noload", dev, dir)
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
}

// diskPowerCut is the panic value of a simulated power cut.
type diskPowerCut struct{ point string }

// diskRunUntilCut runs the sequence with a power cut at point; it returns
// the State as last saved (as the journal holds it after the cut), the step
// that was running (the journal's last "start") and whether the point was
// reached.
func diskRunUntilCut(t *testing.T, env *engine.Env, point string) (saved *journal.State, interrupted string, cut bool) {
	t.Helper()
	saved = cloneState(env.State)
	env.CrashPoint = func(p string) {
		if p == point {
			panic(diskPowerCut{p})
		}
	}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(diskPowerCut); !ok {
				panic(r)
			}
			cut = true
		}
	}()
	_, err := diskRunSequence(context.Background(), env, func() { saved = cloneState(env.State) }, "", &interrupted)
	diskCheckFATMountOnly(t, err, env.Root, env.State.Target.Dev+"p1")
	return saved, interrupted, false
}

func cloneState(s *journal.State) *journal.State {
	c := *s
	if s.Target != nil {
		t := *s.Target
		c.Target = &t
	}
	return &c
}

// TestDiskStepsPowerCut cuts the power at every crash point of the disk
// steps, reboots (mounts and swap gone, State as last saved), runs the
// steps again and compares the disk with an uninterrupted run's by spec.
func TestDiskStepsPowerCut(t *testing.T) {
	diskRequireLoop(t)
	mountPoints := []string{"mount:mnt", "mount:mnt/nix", "mount:mnt/home", "mount:swap"}
	if hostHasVFAT() {
		mountPoints = append(mountPoints, "mount:mnt/boot")
	}
	t.Run("gpt-btrfs", func(t *testing.T) {
		diskPowerCuts(t, diskTestConfig(), slices.Concat([]string{
			"partition:wiped", "partition:gpt-written", "partition:kernel-updated",
			"format:boot", "format:swap", "format:root",
			"format:btrfs-mounted", "format:subvolume-@", "format:subvolume-@nix", "format:subvolume-@home",
		}, mountPoints))
	})
	t.Run("mbr-ext4", func(t *testing.T) {
		cfg := diskTestConfig()
		cfg.Layout.Table = config.TableMBR
		cfg.Layout.RootFS = config.FSExt4
		cfg.Layout.Subvolumes = nil
		points := []string{
			"partition:wiped", "partition:gpt-written", "partition:mbr-converted", "partition:mbr-disk-id", "partition:kernel-updated",
			"format:boot", "format:swap", "format:root", "mount:mnt", "mount:swap",
		}
		if hostHasVFAT() {
			points = append(points, "mount:mnt/boot")
		}
		diskPowerCuts(t, cfg, points)
	})
}

func diskPowerCuts(t *testing.T, cfg *config.Config, wantPoints []string) {
	ctx := context.Background()
	// The uninterrupted run gives the crash points in order and must match
	// the spec. Every disk below is 1 MiB larger than the one before: its
	// derived IDs differ, so no two attached devices ever share a
	// filesystem UUID (mkfs.btrfs refuses one that another device has).
	var points []string
	t.Run("uninterrupted", func(t *testing.T) {
		dev, _ := diskLoop(t, diskTestSize)
		root := diskRoot(t)
		t.Cleanup(func() { diskUnmountAll(t, dev, root) })
		env, _ := diskTestEnv(t, root, cfg, dev, nil)
		env.CrashPoint = func(p string) { points = append(points, p) }
		_, err := diskRunSequence(ctx, env, nil, "", nil)
		diskCheckFATMountOnly(t, err, root, dev+"p1")
		if got, want := readDiskSpec(t, dev), diskWantSpec(t, cfg, env.State.Target); !reflect.DeepEqual(got, want) {
			t.Errorf("uninterrupted run: disk differs from the spec:\ngot  %v\nwant %v", got, want)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	if !reflect.DeepEqual(points, wantPoints) {
		t.Fatalf("crash points = %q, want %q", points, wantPoints)
	}

	for i, point := range points {
		t.Run(point, func(t *testing.T) {
			size := int64(diskTestSize + (i+1)<<20)
			dev, _ := diskLoop(t, size)
			root := diskRoot(t)
			t.Cleanup(func() { diskUnmountAll(t, dev, root) })
			env, _ := diskTestEnv(t, root, cfg, dev, nil)
			saved, interrupted, cut := diskRunUntilCut(t, env, point)
			if !cut {
				t.Fatalf("crash point %s was not reached", point)
			}
			diskUnmountAll(t, dev, root) // the reboot

			// The next boot redoes the interrupted step from its start, as
			// the engine does, and probes the others.
			env2, _ := diskTestEnv(t, root, cfg, dev, saved)
			_, err := diskRunSequence(ctx, env2, nil, interrupted, nil)
			diskCheckFATMountOnly(t, err, root, dev+"p1")
			if got, want := readDiskSpec(t, dev), diskWantSpec(t, cfg, env2.State.Target); !reflect.DeepEqual(got, want) {
				t.Errorf("after a power cut at %s and a rerun the disk differs from the spec:\ngot  %v\nwant %v", point, got, want)
			}
			mounts, err := disk.ReadMountInfo("/")
			if err != nil {
				t.Fatal(err)
			}
			if m := disk.MountAt(mounts, filepath.Join(root, "mnt")); m == nil || m.Source != dev+"p3" {
				t.Errorf("root mount after the rerun = %+v", m)
			}
			if cfg.Layout.RootFS == config.FSBtrfs {
				diskCheckMounted(t, root, dev)
			}
			if out, err := exec.Command("fsck.fat", "-n", dev+"p1").CombinedOutput(); err != nil {
				t.Errorf("fsck.fat -n: %v: %s", err, out)
			}
		})
	}
}

// diskWantSpec is the spec an uninterrupted run gives on the recorded disk
// (a loop device: no serial): the plan's geometry and derived IDs.
func diskWantSpec(t *testing.T, cfg *config.Config, rec *journal.Disk) diskSpec {
	t.Helper()
	if rec == nil || rec.IDSeed == "" {
		t.Fatalf("recorded disk %+v: no ID seed", rec)
	}
	plan, err := disk.NewPlan(cfg.Layout, diskTestRAM, disk.Identity{Size: rec.Size, Seed: rec.IDSeed}, 512)
	if err != nil {
		t.Fatal(err)
	}
	want := diskSpec{Table: "gpt", DiskID: plan.DiskID}
	if plan.Table == config.TableMBR {
		want.Table = "dos"
	}
	for _, p := range plan.Parts {
		ps := partSpec{Start: p.Start, Size: p.Sectors, Type: p.GPTType, GUID: p.GUID, Name: p.Name, FSType: p.FSType, Label: p.Label, UUID: p.FSUUID}
		if plan.Table == config.TableMBR {
			ps.Type, ps.Name = strings.ToUpper(p.MBRType), "" // MBR has no partition names
		}
		want.Parts = append(want.Parts, ps)
	}
	if len(plan.Subvolumes) > 0 {
		want.Subvol = slices.Sorted(slices.Values(plan.Subvolumes))
	}
	return want
}

// TestDiskStepsResumeOwnDisk: after a power cut mid-format the disk holds
// this installation's table. The target step accepts it with wipe = false
// when the journal's State names it; a fresh journal (another card) does not.
func TestDiskStepsResumeOwnDisk(t *testing.T) {
	diskRequireLoop(t)
	ctx := context.Background()
	const size = diskTestSize + 100<<20 // its own IDs, see diskPowerCuts
	dev, img := diskLoop(t, size)
	root := diskRoot(t)
	t.Cleanup(func() { diskUnmountAll(t, dev, root) })
	env, _ := diskTestEnv(t, root, diskTestConfig(), dev, nil)
	saved, _, cut := diskRunUntilCut(t, env, "format:swap")
	if !cut {
		t.Fatal("crash point format:swap not reached")
	}
	diskUnmountAll(t, dev, root)

	fresh, freshRec := diskTestEnv(t, root, diskTestConfig(), dev, nil)
	before := fileSHA256(t, img)
	err := steps.NewTarget().Run(ctx, fresh)
	if err == nil || !strings.Contains(err.Error(), "it is not blank: it holds a partition table (gpt)") || !strings.Contains(err.Error(), `1 (500.0 MiB at 1.0 MiB): vfat label "boot"`) {
		t.Fatalf("a journal that never saw this disk: want a refusal, got %v", err)
	}
	if cmds := freshRec.destructive(); len(cmds) > 0 || fileSHA256(t, img) != before {
		t.Errorf("the refusal changed things: %q", cmds)
	}

	var logs []string
	resumed, _ := diskTestEnv(t, root, diskTestConfig(), dev, saved)
	resumed.Progress = func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }
	if err := steps.NewTarget().Run(ctx, resumed); err != nil {
		t.Fatalf("own partial work: %v", err)
	}
	if !slices.ContainsFunc(logs, func(l string) bool { return strings.Contains(l, "earlier partial work") }) {
		t.Errorf("no resume message in %q", logs)
	}
	_, err = diskRunSequence(ctx, resumed, nil, "", nil)
	diskCheckFATMountOnly(t, err, root, dev+"p1")
	if got, want := readDiskSpec(t, dev), diskWantSpec(t, resumed.Config, resumed.State.Target); !reflect.DeepEqual(got, want) {
		t.Errorf("disk differs from the spec:\ngot  %v\nwant %v", got, want)
	}
}

// TestDiskStepsWipeAllowed: a disk with an MBR table and an ext4 filesystem
// is erased when target.wipe = true, and ends up exactly as a blank one.
func TestDiskStepsWipeAllowed(t *testing.T) {
	diskRequireLoop(t)
	ctx := context.Background()
	const size = diskTestSize + 200<<20
	dev, _ := diskLoop(t, size)
	root := diskRoot(t)
	t.Cleanup(func() { diskUnmountAll(t, dev, root) })
	// An old layout whose ext4 sits where the new boot and root partitions go.
	diskMust(t, "sgdisk", "--new=1:2048:+2G", "--typecode=1:8300", "--gpttombr=1", dev)
	diskMust(t, "partx", "--update", dev)
	diskMust(t, "mkfs.ext4", "-q", "-L", "old", dev+"p1")
	before := readDiskSpec(t, dev)
	if before.Table != "dos" || before.Parts[0].FSType != "ext4" {
		t.Fatalf("prepared disk: %v", before)
	}
	cfg := diskTestConfig()
	cfg.Target.Wipe = true
	env, rec := diskTestEnv(t, root, cfg, dev, nil)
	_, err := diskRunSequence(ctx, env, nil, "", nil)
	diskCheckFATMountOnly(t, err, root, dev+"p1")
	if got, want := readDiskSpec(t, dev), diskWantSpec(t, cfg, env.State.Target); !reflect.DeepEqual(got, want) {
		t.Errorf("disk differs from the spec:\ngot  %v\nwant %v", got, want)
	}
	// The old ext4 inside the new boot partition was erased before mkfs.fat.
	cmds := rec.destructive()
	if i := slices.Index(cmds, "/usr/sbin/wipefs --all "+dev+"p1"); i < 0 || !strings.HasPrefix(cmds[i+1], "/usr/sbin/mkfs.fat ") {
		t.Errorf("want wipefs --all %sp1 right before mkfs.fat, ran %q", dev, cmds)
	}
}

// TestDiskStepsPrepared: each case is a disk set up with the real tools and
// a config under which it must be prepared exactly as the plan says.
func TestDiskStepsPrepared(t *testing.T) {
	diskRequireLoop(t)
	for i, tc := range []struct {
		name    string
		wipe    bool
		prepare func(t *testing.T, dev string)
	}{
		{name: "blank disk and wipe false"},
		{
			name: "backup GPT only and wipe true",
			wipe: true,
			prepare: func(t *testing.T, dev string) {
				diskMust(t, "sgdisk", "--new=1:2048:+100M", dev)
				diskWriteAt(t, dev, 0, make([]byte, 34*512))
			},
		},
		{
			name: "primary GPT zeroed over a filesystem and wipe true",
			wipe: true,
			prepare: func(t *testing.T, dev string) {
				diskMust(t, "sgdisk", "--new=1:2048:+700M", dev)
				diskMust(t, "partx", "--update", dev)
				diskMust(t, "mkfs.btrfs", "-q", "-L", "photos", dev+"p1")
				diskWriteAt(t, dev, 0, make([]byte, 34*512))
				diskMust(t, "partx", "--delete", dev)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			size := int64(diskTestSize + (300+i)<<20) // IDs of its own, see diskPowerCuts
			dev, _ := diskLoop(t, size)
			root := diskRoot(t)
			t.Cleanup(func() { diskUnmountAll(t, dev, root) })
			if tc.prepare != nil {
				tc.prepare(t, dev)
			}
			cfg := diskTestConfig()
			cfg.Target.Wipe = tc.wipe
			env, _ := diskTestEnv(t, root, cfg, dev, nil)
			_, err := diskRunSequence(ctx, env, nil, "", nil)
			diskCheckFATMountOnly(t, err, root, dev+"p1")
			if got, want := readDiskSpec(t, dev), diskWantSpec(t, cfg, env.State.Target); !reflect.DeepEqual(got, want) {
				t.Errorf("disk differs from the spec:\ngot  %v\nwant %v", got, want)
			}
			diskCheckMounted(t, root, dev)
		})
	}
}

// TestDiskStepsPartitionNodeNotTheKernels: the device root's /dev holds, where
// a partition's node goes, a regular file or the node of another disk. The
// partition step writes the table, then refuses to use that path; no mkfs
// runs, and the file and the other disk are unchanged.
func TestDiskStepsPartitionNodeNotTheKernels(t *testing.T) {
	diskRequireLoop(t)
	for i, tc := range []struct {
		name string
		part int
		// put makes what sits at node in the root's /dev; it returns the
		// path whose content must not change.
		put  func(t *testing.T, path string) string
		want string
	}{
		{
			name: "regular file",
			part: 1,
			put: func(t *testing.T, path string) string {
				if err := os.WriteFile(path, []byte("someone's notes\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return path
			},
			want: "is a regular file, not the block device",
		},
		{
			name: "node of another disk",
			part: 3,
			put: func(t *testing.T, path string) string {
				other, img := diskLoop(t, 64<<20)
				diskMust(t, "mkfs.ext4", "-q", "-L", "other", other)
				diskMknodOf(t, other, path)
				return img
			},
			want: "is the block device 7:",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dev, _ := diskLoop(t, diskTestSize+int64(400+i)<<20)
			root := t.TempDir()
			for _, d := range []string{"proc", "sys"} {
				if err := os.Symlink("/"+d, filepath.Join(root, d)); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Mkdir(filepath.Join(root, "dev"), 0o755); err != nil {
				t.Fatal(err)
			}
			diskMknodOf(t, dev, filepath.Join(root, dev))
			node := disk.PartitionNode(dev, tc.part)
			keep := tc.put(t, filepath.Join(root, node))
			before := fileSHA256(t, keep)
			t.Cleanup(func() { diskUnmountAll(t, dev, root) })

			env, rec := diskTestEnv(t, root, diskTestConfig(), dev, nil)
			// This root's /dev gets the nodes the kernel makes, as devtmpfs
			// would, but for the one the test put there itself.
			rec.after = func(argv []string) {
				for n := 1; n <= 3; n++ {
					host := disk.PartitionNode(dev, n)
					if _, err := os.Lstat(filepath.Join(root, host)); os.IsNotExist(err) {
						if _, err := os.Stat(host); err == nil {
							diskMknodOf(t, host, filepath.Join(root, host))
						}
					}
				}
			}
			ran, err := diskRunSequence(ctx, env, nil, "", nil)
			want := fmt.Sprintf("partition: refusing to use partition %d of %q: %q %s", tc.part, dev, node, tc.want)
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("want %s..., got %v", want, err)
			}
			if hint := engine.HintOf(err); !strings.Contains(hint, "remove it") {
				t.Errorf("hint = %q", hint)
			}
			if !reflect.DeepEqual(ran, []string{"target", "partition"}) {
				t.Errorf("ran %v, want target and partition", ran)
			}
			for _, c := range rec.destructive() {
				if strings.Contains(c, "mkfs") || strings.Contains(c, "mkswap") {
					t.Errorf("ran %s", c)
				}
			}
			if after := fileSHA256(t, keep); after != before {
				t.Errorf("%s changed", keep)
			}
		})
	}
}

// diskMknodOf makes at path a block device node for the same device as dev.
func diskMknodOf(t *testing.T, dev, path string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(st.Rdev)); err != nil {
		t.Fatal(err)
	}
}

// TestDiskStepsTwoSameDisksPrepared: two disks of one size without serial
// numbers, both attached, prepared one after the other with fresh journals
// (two installs). Their derived IDs differ, so the second mkfs.btrfs does not
// meet the first one's UUID, and both end up as planned.
func TestDiskStepsTwoSameDisksPrepared(t *testing.T) {
	diskRequireLoop(t)
	ctx := context.Background()
	const size = diskTestSize + 500<<20
	var recs []*journal.Disk
	for range 2 {
		dev, _ := diskLoop(t, size)
		root := diskRoot(t)
		t.Cleanup(func() { diskUnmountAll(t, dev, root) })
		env, _ := diskTestEnv(t, root, diskTestConfig(), dev, nil)
		_, err := diskRunSequence(ctx, env, nil, "", nil)
		diskCheckFATMountOnly(t, err, root, dev+"p1")
		if got, want := readDiskSpec(t, dev), diskWantSpec(t, env.Config, env.State.Target); !reflect.DeepEqual(got, want) {
			t.Errorf("%s differs from the spec:\ngot  %v\nwant %v", dev, got, want)
		}
		recs = append(recs, env.State.Target)
	}
	if recs[0].IDSeed == recs[1].IDSeed || recs[0].GPTGUID == recs[1].GPTGUID {
		t.Errorf("two installs share derived IDs: %+v and %+v", recs[0], recs[1])
	}
}

// TestDiskStepsJournalNamesAnotherDisk: the journal records an installation
// onto disk X (a loop device: no serial number, no by-id link), and another
// disk Y of the same size is attached now where X was (the recorded /dev
// name is Y's, as when Y enumerates as /dev/sda in X's place). The steps stop
// at the target step, name both disks and the two ways on, and Y is
// unchanged.
func TestDiskStepsJournalNamesAnotherDisk(t *testing.T) {
	diskRequireLoop(t)
	ctx := context.Background()
	const size = diskTestSize + 600<<20
	x, _ := diskLoop(t, size)
	xRoot := diskRoot(t)
	t.Cleanup(func() { diskUnmountAll(t, x, xRoot) })
	xEnv, _ := diskTestEnv(t, xRoot, diskTestConfig(), x, nil)
	_, err := diskRunSequence(ctx, xEnv, nil, "", nil)
	diskCheckFATMountOnly(t, err, xRoot, x+"p1")
	diskUnmountAll(t, x, xRoot)
	journal := xEnv.State

	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, y string)
		wipe    bool
		y       string // the recorded /dev name: "" for Y's
		want    string
	}{
		{name: "blank", want: "is another disk: it carries no partition table, and this installation partitioned its disk (disk id " + journal.Target.GPTGUID + ")"},
		{
			name: "partitioned, wipe true",
			prepare: func(t *testing.T, y string) {
				diskExt4Partition(t, y)
			},
			wipe: true,
			want: "is another disk: it carries a partition table with disk id ",
		},
		{name: "X gone", y: "/dev/nixpi-no-such-disk", want: "which is not connected (disks attached now: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y, img := diskLoop(t, size)
			if tc.prepare != nil {
				tc.prepare(t, y)
			}
			before := fileSHA256(t, img)
			state := cloneState(journal)
			state.Target.Dev = y
			override := y
			if tc.y != "" {
				state.Target.Dev, override = tc.y, ""
			}
			cfg := diskTestConfig()
			cfg.Target.Wipe = tc.wipe
			root := diskRoot(t)
			env, rec := diskTestEnv(t, root, cfg, override, state)
			env.Sleep = func(context.Context, time.Duration) error { return nil }
			ran, err := diskRunSequence(ctx, env, nil, "", nil)
			want := fmt.Sprintf("target: the journal records an installation onto disk %q (no serial number, 3.6 GiB), ", state.Target.Dev)
			if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want %s...%s, got: %v", want, tc.want, err)
			}
			if tc.y == "" && !strings.Contains(err.Error(), fmt.Sprintf("but the disk attached now, %q (no serial number, 3.6 GiB), is another disk", y)) {
				t.Errorf("the refusal does not name the disk attached now: %v", err)
			}
			hint := engine.HintOf(err)
			if !strings.Contains(hint, "either connect the disk "+fmt.Sprintf("%q", state.Target.Dev)) || !strings.Contains(hint, "or delete nixpi/journal.jsonl on the SD card to start over onto") {
				t.Errorf("hint = %q, want the two ways on", hint)
			}
			t.Logf("refused: %v\nhint: %s", err, hint)
			if !reflect.DeepEqual(ran, []string{"target"}) {
				t.Errorf("ran %v, want only target", ran)
			}
			if cmds := rec.destructive(); len(cmds) > 0 {
				t.Errorf("ran commands that change things: %q", cmds)
			}
			if *env.State.Target != *state.Target {
				t.Errorf("the journal's disk changed to %+v", env.State.Target)
			}
			if after := fileSHA256(t, img); after != before {
				t.Errorf("the other disk changed")
			}
		})
	}
}

// TestDiskStepsMBRAndExt4 runs the options: an MBR table and an ext4 root.
func TestDiskStepsMBRAndExt4(t *testing.T) {
	diskRequireLoop(t)
	ctx := context.Background()
	dev, _ := diskLoop(t, diskTestSize)
	root := diskRoot(t)
	t.Cleanup(func() { diskUnmountAll(t, dev, root) })
	cfg := diskTestConfig()
	cfg.Layout.Table = config.TableMBR
	cfg.Layout.RootFS = config.FSExt4
	cfg.Layout.Subvolumes = nil
	env, _ := diskTestEnv(t, root, cfg, dev, nil)
	_, err := diskRunSequence(ctx, env, nil, "", nil)
	diskCheckFATMountOnly(t, err, root, dev+"p1")

	plan, err := disk.NewPlan(cfg.Layout, diskTestRAM, disk.Identity{Size: diskTestSize, Seed: env.State.Target.IDSeed}, 512)
	if err != nil {
		t.Fatal(err)
	}
	want := diskSpec{Table: "dos", DiskID: plan.DiskID, Parts: []partSpec{
		{Start: 2048, Size: 1024000, Type: "C", FSType: "vfat", Label: "boot", UUID: plan.Parts[0].FSUUID},
		{Start: 1026048, Size: 131072, Type: "82", FSType: "swap", Label: "swap", UUID: plan.Parts[1].FSUUID},
		{Start: 1157120, Size: 5132288, Type: "83", FSType: "ext4", Label: "root", UUID: plan.Parts[2].FSUUID},
	}}
	if got := readDiskSpec(t, dev); !reflect.DeepEqual(got, want) {
		t.Errorf("disk differs from the spec:\ngot  %v\nwant %v", got, want)
	}
	mounts, _ := disk.ReadMountInfo("/")
	if m := disk.MountAt(mounts, filepath.Join(root, "mnt")); m == nil || m.Source != dev+"p3" || m.FSType != "ext4" {
		t.Errorf("root mount = %+v, want ext4 from %sp3", m, dev)
	}
	// Everything but the FAT mount this kernel cannot do probes done.
	env2, rec := diskTestEnv(t, root, cfg, dev, env.State)
	ran, err := diskRunSequence(ctx, env2, nil, "", nil)
	diskCheckFATMountOnly(t, err, root, dev+"p1")
	// fsck.fat and the mount.
	if len(ran) > 1 || len(rec.destructive()) > 2 {
		t.Errorf("second run ran %v and %q", ran, rec.destructive())
	}
}
