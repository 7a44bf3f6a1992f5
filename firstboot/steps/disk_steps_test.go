package steps_test

// Unit tests of the disk steps against a temp root and a recording runner
// (systemtest.Runner, a test double for the real tools): recorded lsblk
// output for discovery, golden argv files for what each step runs.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/steps"
	"github.com/nixpi/nixpi/firstboot/system"
	"github.com/nixpi/nixpi/firstboot/system/systemtest"
)

const (
	diskSSDByID   = "/dev/disk/by-id/usb-Samsung_PSSD_T7_S4EVNF0M123456-0:0"
	diskStickByID = "/dev/disk/by-id/usb-SanDisk_Ultra_4C530001230417105384-0:0"
	diskSSDSize   = 500107862016
	diskPiRAM     = 3977551872 // 3.7 GiB: swap rounds up to 3794 MiB
)

// diskUnit is a temp root shaped like a Pi with Raspberry Pi OS on the SD
// card, and a recording runner.
type diskUnit struct {
	env   *engine.Env
	run   *systemtest.Runner
	lsblk *systemtest.Reply
	logs  []string
}

func newDiskUnit(t *testing.T, lsblkFile, mountinfoFile string) *diskUnit {
	t.Helper()
	u := &diskUnit{run: &systemtest.Runner{}}
	u.env = &engine.Env{
		Config:   config.Default(),
		Root:     t.TempDir(),
		BootDir:  "/boot/firmware",
		Run:      u.run,
		Tools:    system.DefaultTools(),
		State:    &journal.State{RAMBytes: diskPiRAM},
		Progress: func(f string, a ...any) { u.logs = append(u.logs, fmt.Sprintf(f, a...)) },
		// A fake clock: waiting for a disk costs no time.
		Sleep: func(ctx context.Context, d time.Duration) error { return nil },
	}
	lsblk, err := os.ReadFile(filepath.Join("testdata", lsblkFile))
	if err != nil {
		t.Fatal(err)
	}
	u.lsblk = u.run.On(string(lsblk), u.env.Tools.Lsblk, "-J", "-b", "-O")
	// blkid finds nothing at any offset unless a test says otherwise.
	u.run.Fail(2, "", u.env.Tools.Blkid)
	mountinfo, err := os.ReadFile(filepath.Join("testdata", mountinfoFile))
	if err != nil {
		t.Fatal(err)
	}
	u.put(t, "/proc/self/mountinfo", string(mountinfo))
	u.put(t, "/proc/swaps", "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
	u.link(t, diskSSDByID, "../../sda")
	u.link(t, diskStickByID, "../../sdb")
	u.link(t, "/dev/disk/by-id/wwn-0x5002538e00000001", "../../sda")
	u.link(t, "/dev/disk/by-id/mmc-SC32G_0x1234abcd", "../../mmcblk0")
	for _, n := range []string{"/dev/sda", "/dev/sdb", "/dev/sdb1", "/dev/mmcblk0", "/dev/mmcblk0p1", "/dev/mmcblk0p2"} {
		u.put(t, n, "")
	}
	u.sized(t, lsblk)
	return u
}

// reshape rewrites the SSD (/dev/sda) in the unit's lsblk output: its size
// in bytes and its logical sector size (0 keeps them), and resizes the
// file standing in for it.
func (u *diskUnit) reshape(t *testing.T, size, logSec int64) {
	t.Helper()
	var out map[string][]map[string]any
	if err := json.Unmarshal([]byte(u.lsblk.Stdout), &out); err != nil {
		t.Fatal(err)
	}
	for _, d := range out["blockdevices"] {
		if d["name"] == "sda" {
			if size > 0 {
				d["size"] = size
			}
			if logSec > 0 {
				d["log-sec"] = logSec
			}
		}
	}
	data, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	u.lsblk.Stdout = string(data)
	u.sized(t, data)
}

// assertRefusedUntouched checks a refusal by the target step left the disk
// alone: nothing recorded, nothing run but lsblk.
func (u *diskUnit) assertRefusedUntouched(t *testing.T) {
	t.Helper()
	if u.env.State.Target != nil {
		t.Errorf("State.Target = %+v after a refusal", u.env.State.Target)
	}
	for _, c := range u.run.Calls() {
		if filepath.Base(c[0]) != "lsblk" {
			t.Errorf("a refusal ran %q; only lsblk may run before the disk is judged", system.QuoteArgv(c))
		}
	}
}

// sized makes the files standing in for the whole disks lsblk lists as
// large as lsblk says, all zeros (sparse): the blank rule reads them. And
// sysfs shows the disks and their partitions by the numbers lsblk gives,
// as the kernel would: the in-use check finds a disk by its number there.
func (u *diskUnit) sized(t *testing.T, lsblk []byte) {
	t.Helper()
	devs, err := disk.ParseLsblk(lsblk)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		f, err := os.OpenFile(u.env.Path(d.DevPath()), os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(d.SizeBytes()); err != nil {
			t.Fatal(err)
		}
		f.Close()
		sys := filepath.Join("/sys/devices/virtual/block", d.KName)
		u.sysfsEntry(t, sys, d, 0)
		for i, c := range d.Children {
			if c.Type == "part" {
				u.sysfsEntry(t, filepath.Join(sys, c.KName), c, i+1)
			}
		}
	}
}

// sysfsEntry is a block device's sysfs directory sys (partition n of its
// disk when n > 0), and the links to it by name and by number.
func (u *diskUnit) sysfsEntry(t *testing.T, sys string, d disk.Device, n int) {
	t.Helper()
	u.put(t, sys+"/dev", d.MajMin+"\n")
	u.put(t, sys+"/size", fmt.Sprintf("%d\n", d.SizeBytes()/512))
	if n > 0 {
		u.put(t, sys+"/partition", fmt.Sprintf("%d\n", n))
	}
	for _, l := range []string{"/sys/dev/block/" + d.MajMin, "/sys/class/block/" + d.KName} {
		if _, err := os.Lstat(u.env.Path(l)); err == nil {
			continue // a later lsblk listing of the same device
		}
		u.link(t, l, filepath.Join("../../..", sys))
	}
}

func (u *diskUnit) put(t *testing.T, path, data string) {
	t.Helper()
	full := u.env.Path(path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (u *diskUnit) link(t *testing.T, path, target string) {
	t.Helper()
	full := u.env.Path(path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, full); err != nil {
		t.Fatal(err)
	}
}

// partitionNodes is what the kernel shows once it has read the planned
// table of dev: the partitions in sysfs and their block device nodes. The
// nodes have major 240 (local/experimental use, no driver): nothing that
// opens one by mistake reaches a real device. Making them needs root.
func (u *diskUnit) partitionNodes(t *testing.T, dev string, plan *disk.Plan) {
	t.Helper()
	kname := filepath.Base(dev)
	for _, p := range plan.Parts {
		node := disk.PartitionNode(dev, p.Number)
		sys := filepath.Join("/sys/class/block", kname, filepath.Base(node))
		u.put(t, sys+"/partition", fmt.Sprintf("%d\n", p.Number))
		u.put(t, sys+"/dev", fmt.Sprintf("240:%d\n", p.Number))
		_ = os.Remove(u.env.Path(node))
		if err := unix.Mknod(u.env.Path(node), unix.S_IFBLK|0o600, int(unix.Mkdev(240, uint32(p.Number)))); err != nil {
			t.Skipf("skipping: making a block device node needs root: %v", err)
		}
	}
}

// blank scripts wipefs to find nothing on dev.
func (u *diskUnit) blank(dev string) *systemtest.Reply {
	return u.run.On("", u.env.Tools.Wipefs, "--no-act", "--json", dev)
}

func (u *diskUnit) signatures(dev string, sigs ...disk.Signature) *systemtest.Reply {
	data, _ := json.Marshal(map[string]any{"signatures": sigs})
	return u.run.On(string(data), u.env.Tools.Wipefs, "--no-act", "--json", dev)
}

// recordSSD is the State the target step leaves for the Samsung SSD.
func (u *diskUnit) recordSSD(t *testing.T) *disk.Plan {
	t.Helper()
	plan, err := disk.NewPlan(u.env.Config.Layout, diskPiRAM, disk.Identity{ByID: diskSSDByID, Serial: "S4EVNF0M123456", Size: diskSSDSize}, 512)
	if err != nil {
		t.Fatal(err)
	}
	u.env.State.Target = &journal.Disk{Dev: "/dev/sda", ByID: diskSSDByID, Serial: "S4EVNF0M123456", Size: diskSSDSize, GPTGUID: plan.DiskID}
	return plan
}

// tableOf is the read-back a correctly partitioned disk gives: wipefs sees
// the GPT, sfdisk --json prints the planned table.
func (u *diskUnit) tableOf(plan *disk.Plan, dev string) {
	label := "gpt"
	if plan.Table == config.TableMBR {
		label = "dos"
	}
	t := disk.Table{Label: label, ID: strings.ToUpper(plan.DiskID), SectorSize: plan.SectorSize}
	for _, p := range plan.Parts {
		tp := disk.TablePart{Node: disk.PartitionNode(dev, p.Number), Start: p.Start, Size: p.Sectors, Type: p.GPTType, UUID: strings.ToUpper(p.GUID), Name: p.Name}
		if label == "dos" {
			tp.Type, tp.UUID, tp.Name = p.MBRType, "", ""
		}
		t.Partitions = append(t.Partitions, tp)
	}
	data, _ := json.Marshal(map[string]any{"partitiontable": t})
	u.run.On(string(data), u.env.Tools.Sfdisk, "--json", dev)
	u.signatures(dev, disk.Signature{Offset: "0x200", Type: label}, disk.Signature{Offset: "0x1fe", Type: "PMBR"})
}

func TestDiskTargetTwoUSBDisksRefused(t *testing.T) {
	t.Parallel()
	u := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
	err := steps.NewTarget().Run(context.Background(), u.env)
	for _, want := range []string{`2 USB disks match target.disk = "auto"`, `"/dev/sda" (Samsung PSSD T7, serial S4EVNF0M123456, 465.8 GiB, ` + diskSSDByID + `)`, `"/dev/sdb" (SanDisk Ultra`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error = %v, want it to contain %q", err, want)
		}
	}
	if !strings.Contains(engine.HintOf(err), "target.serial") {
		t.Errorf("hint = %q, want one naming target.serial", engine.HintOf(err))
	}
	if u.env.State.Target != nil {
		t.Errorf("State.Target = %+v after a refusal", u.env.State.Target)
	}
	systemtest.Golden(t, "target-lsblk-only.argv", u.run.Transcript())
}

func TestDiskTargetBySerial(t *testing.T) {
	t.Parallel()
	u := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
	u.env.Config.Target = config.Target{Serial: "S4EVNF0M123456"}
	u.blank("/dev/sda")
	if err := steps.NewTarget().Run(context.Background(), u.env); err != nil {
		t.Fatal(err)
	}
	got := u.env.State.Target
	if got == nil || len(got.IDSeed) != 32 {
		t.Fatalf("State.Target = %+v, want a 128-bit ID seed recorded", got)
	}
	plan, err := disk.NewPlan(u.env.Config.Layout, diskPiRAM, disk.Identity{ByID: diskSSDByID, Serial: "S4EVNF0M123456", Size: diskSSDSize, Seed: got.IDSeed}, 512)
	if err != nil {
		t.Fatal(err)
	}
	want := journal.Disk{Dev: "/dev/sda", ByID: diskSSDByID, Serial: "S4EVNF0M123456", Size: diskSSDSize, GPTGUID: plan.DiskID, Model: "Samsung PSSD T7", IDSeed: got.IDSeed}
	if *got != want {
		t.Fatalf("State.Target = %+v, want %+v", got, want)
	}
	systemtest.Golden(t, "target-serial.argv", u.run.Transcript())

	done, why, err := steps.NewTarget().Probe(context.Background(), u.env)
	if !done || err != nil || !strings.Contains(why, `"/dev/sda"`) {
		t.Errorf("Probe after Run = %v, %q, %v; want done", done, why, err)
	}

	// The config edited to choose the other disk: the choice is redone.
	u.env.Config.Target = config.Target{Disk: diskStickByID}
	done, why, err = steps.NewTarget().Probe(context.Background(), u.env)
	if done || err != nil || why != `the recorded disk "/dev/sda" does not match target.disk = "`+diskStickByID+`"` {
		t.Errorf("Probe with another disk configured = %v, %q, %v; want not done", done, why, err)
	}
}

func TestDiskTargetByIDWithDataRefused(t *testing.T) {
	t.Parallel()
	u := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
	u.env.Config.Target = config.Target{Disk: diskStickByID}
	u.signatures("/dev/sdb", disk.Signature{Offset: "0x1fe", Type: "dos", UUID: "a1b2c3d4"})
	u.run.On(`{"partitiontable": {"label": "dos", "id": "0xa1b2c3d4", "device": "/dev/sdb", "unit": "sectors", "sectorsize": 512,
		"partitions": [{"node": "/dev/sdb1", "start": 2048, "size": 125043712, "type": "7"}]}}`, u.env.Tools.Sfdisk, "--json", "/dev/sdb")
	u.run.On("DEVNAME=/dev/sdb\nLABEL=STICK\nTYPE=exfat\nUSAGE=filesystem\n", u.env.Tools.Blkid, "-p", "-o", "export", "-O", "1048576", "-S", "64022380544", "/dev/sdb")
	err := steps.NewTarget().Run(context.Background(), u.env)
	if err == nil || !strings.Contains(err.Error(), `refusing disk "/dev/sdb" (SanDisk Ultra, serial 4C530001230417105384, 59.6 GiB, `+diskStickByID+`): it is not blank: `+
		`it holds a partition table (dos) at 510 B (0x1fe); 1 partition: 1 (59.6 GiB at 1.0 MiB): exfat label "STICK", and target.wipe = false`) {
		t.Fatalf("error = %v", err)
	}
	if !strings.Contains(engine.HintOf(err), "set `wipe = true` in nixpi/nixpi.toml if this disk may be erased") {
		t.Errorf("hint = %q", engine.HintOf(err))
	}

	// With wipe allowed the same disk is taken (the partition step erases it).
	u.env.Config.Target.Wipe = true
	if err := steps.NewTarget().Run(context.Background(), u.env); err != nil {
		t.Fatal(err)
	}
	if u.env.State.Target == nil || u.env.State.Target.Dev != "/dev/sdb" {
		t.Fatalf("State.Target = %+v, want /dev/sdb", u.env.State.Target)
	}
}

func TestDiskTargetRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, lsblk, mountinfo string
		target                 config.Target
		override               string
		want                   string
	}{
		{"SD card by by-id", "lsblk-pi-two-usb.json", "mountinfo-pi", config.Target{Disk: "/dev/disk/by-id/mmc-SC32G_0x1234abcd"}, "",
			`refusing disk "/dev/mmcblk0" (target.disk = "/dev/disk/by-id/mmc-SC32G_0x1234abcd"): it holds the running system (/)`},
		{"SD card by --target", "lsblk-pi-two-usb.json", "mountinfo-pi", config.Target{Disk: "auto"}, "/dev/mmcblk0",
			`refusing disk "/dev/mmcblk0": it holds the running system (/)`},
		{"partition by --target", "lsblk-pi-two-usb.json", "mountinfo-pi", config.Target{Disk: "auto"}, "/dev/sdb1",
			`--target "/dev/sdb1": "/dev/sdb1" is a partition of "/dev/sdb": name the whole disk`},
		{"no such by-id", "lsblk-pi-two-usb.json", "mountinfo-pi", config.Target{Disk: "/dev/disk/by-id/usb-Gone_123-0:0"}, "",
			`no USB disk at target.disk = "/dev/disk/by-id/usb-Gone_123-0:0"`},
		{"unknown serial", "lsblk-pi-two-usb.json", "mountinfo-pi", config.Target{Serial: "NOPE"}, "",
			`no USB disk matches target.serial = "NOPE" (USB disks found: "/dev/sda" (Samsung PSSD T7`},
		{"USB boot disk, --target", "lsblk-pi-usb-boot.json", "mountinfo-usb-boot", config.Target{Disk: "auto"}, "/dev/sda",
			`refusing disk "/dev/sda": it holds the running system (/)`},
		{"too small for min_size", "lsblk-pi-two-usb.json", "mountinfo-pi", config.Target{Serial: "S4EVNF0M123456", MinSize: 1 << 40}, "",
			`refusing disk "/dev/sda" (Samsung PSSD T7, serial S4EVNF0M123456, 465.8 GiB, ` + diskSSDByID + `): it is smaller than target.min_size = 1TiB`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u := newDiskUnit(t, tc.lsblk, tc.mountinfo)
			u.env.Config.Target = tc.target
			u.env.TargetOverride = tc.override
			err := steps.NewTarget().Run(context.Background(), u.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v\nwant it to contain %s", err, tc.want)
			}
			u.assertRefusedUntouched(t)
		})
	}
}

func TestDiskTargetSkipsUSBBootDiskAndEmptyReader(t *testing.T) {
	t.Parallel()
	// Booted from a USB card reader: that disk holds / and is no candidate,
	// nor is the reader without a card (size 0); the SSD is the only one.
	u := newDiskUnit(t, "lsblk-pi-usb-boot.json", "mountinfo-usb-boot")
	u.blank("/dev/sdb")
	if err := steps.NewTarget().Run(context.Background(), u.env); err != nil {
		t.Fatal(err)
	}
	if got := u.env.State.Target; got == nil || got.Dev != "/dev/sdb" || got.Serial != "2233445566" || got.Size != 240057409536 {
		t.Fatalf("State.Target = %+v, want /dev/sdb", got)
	}
}

func TestDiskTargetWaitsForLateDisk(t *testing.T) {
	t.Parallel()
	// The SSD enumerates a few seconds after the service starts: lsblk sees
	// only the SD card twice, then the SSD too.
	u := newDiskUnit(t, "lsblk-pi-sd-only.json", "mountinfo-pi")
	u.lsblk.Times = 2
	late, err := os.ReadFile("testdata/lsblk-pi-one-usb.json")
	if err != nil {
		t.Fatal(err)
	}
	u.run.On(string(late), u.env.Tools.Lsblk, "-J", "-b", "-O")
	u.sized(t, late)
	u.blank("/dev/sda")
	var waited time.Duration
	u.env.Sleep = func(ctx context.Context, d time.Duration) error { waited += d; return nil }
	if err := steps.NewTarget().Run(context.Background(), u.env); err != nil {
		t.Fatal(err)
	}
	if got := u.env.State.Target; got == nil || got.Dev != "/dev/sda" {
		t.Fatalf("State.Target = %+v, want the late /dev/sda", got)
	}
	if waited != 2*time.Second {
		t.Errorf("waited %s, want 2s (two polls)", waited)
	}

	// A disk that never comes: refused after the bounded wait.
	u2 := newDiskUnit(t, "lsblk-pi-sd-only.json", "mountinfo-pi")
	waited = 0
	u2.env.Sleep = u.env.Sleep
	err = steps.NewTarget().Run(context.Background(), u2.env)
	if err == nil || !strings.Contains(err.Error(), `no USB disk matches target.disk = "auto" (USB disks found: none)`) {
		t.Fatalf("error = %v", err)
	}
	if waited != 30*time.Second {
		t.Errorf("waited %s before refusing, want 30s", waited)
	}
}

func TestDiskTargetInUseRefused(t *testing.T) {
	t.Parallel()
	u := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
	u.env.Config.Target = config.Target{Serial: "4C530001230417105384", Wipe: true}
	u.put(t, "/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n/dev/sdb1                               partition\t65532\t0\t-2\n")
	// /proc/swaps names a path; the node there says which device it is
	// (only stat'ed: the refusal opens nothing).
	if err := os.Remove(u.env.Path("/dev/sdb1")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(u.env.Path("/dev/sdb1"), unix.S_IFBLK|0o600, int(unix.Mkdev(8, 17))); err != nil {
		t.Skipf("skipping: making a block device node needs root: %v", err)
	}
	err := steps.NewTarget().Run(context.Background(), u.env)
	if err == nil || !strings.Contains(err.Error(), `refusing disk "/dev/sdb": it is in use: "/dev/sdb1" is active swap`) {
		t.Fatalf("error = %v", err)
	}

	// Held by a device-mapper device (this kernel's sysfs, recorded: the
	// machine running the tests may have no device mapper).
	u2 := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
	u2.env.Config.Target = config.Target{Serial: "4C530001230417105384", Wipe: true}
	u2.put(t, "/sys/class/block/sdb1/holders/dm-0/dev", "254:0\n")
	err = steps.NewTarget().Run(context.Background(), u2.env)
	if err == nil || !strings.Contains(err.Error(), `refusing disk "/dev/sdb": it is in use: "/dev/sdb1" is held by "/dev/dm-0"`) {
		t.Fatalf("error = %v", err)
	}
	for _, c := range u2.run.Calls() {
		if filepath.Base(c[0]) != "lsblk" {
			t.Errorf("ran %q on a disk in use", system.QuoteArgv(c))
		}
	}
}

func TestDiskPartitionGolden(t *testing.T) {
	t.Parallel()
	for _, table := range []string{config.TableGPT, config.TableMBR} {
		t.Run(table, func(t *testing.T) {
			t.Parallel()
			u := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
			u.env.Config.Layout.Table = table
			plan := u.recordSSD(t)
			u.blank("/dev/sda").Times = 3 // Probe, Run's first look, the blank rule
			u.tableOf(plan, "/dev/sda")   // read back after writing
			u.run.On("", u.env.Tools.Wipefs, "--all")
			u.run.On("", u.env.Tools.Sgdisk)
			u.run.On("", u.env.Tools.Sfdisk, "--disk-id")
			u.run.On("", u.env.Tools.Sfdisk, "--part-type")
			u.run.On("", u.env.Tools.Partx, "--update", "/dev/sda")
			u.run.OnRun = func(argv []string) {
				if argv[0] == u.env.Tools.Partx { // the kernel makes the nodes
					u.partitionNodes(t, "/dev/sda", plan)
				}
			}
			var crashes []string
			u.env.CrashPoint = func(p string) { crashes = append(crashes, p) }
			step := steps.NewPartition()
			if done, why, err := step.Probe(context.Background(), u.env); done || err != nil {
				t.Fatalf("Probe on a blank disk = %v, %q, %v", done, why, err)
			}
			if err := step.Run(context.Background(), u.env); err != nil {
				t.Fatal(err)
			}
			systemtest.Golden(t, "partition-"+table+".argv", u.run.Transcript())
			want := []string{"partition:wiped", "partition:gpt-written", "partition:kernel-updated"}
			if table == config.TableMBR {
				want = []string{"partition:wiped", "partition:gpt-written", "partition:mbr-converted", "partition:mbr-disk-id", "partition:kernel-updated"}
			}
			if !slices.Equal(crashes, want) {
				t.Errorf("crash points %q, want %q", crashes, want)
			}
			if done, why, err := step.Probe(context.Background(), u.env); !done || err != nil {
				t.Errorf("Probe after Run = %v, %q, %v", done, why, err)
			}
		})
	}
}

func TestDiskPartitionRefusesAnotherDisk(t *testing.T) {
	t.Parallel()
	u := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
	u.recordSSD(t)
	u.env.State.Target.Serial = "SOMEONE-ELSES" // the journal names a different disk
	err := steps.NewPartition().Run(context.Background(), u.env)
	if err == nil || !strings.Contains(err.Error(), `the journal records an installation onto disk "/dev/sda" (serial SOMEONE-ELSES, 465.8 GiB, `+diskSSDByID+`), `+
		`but the disk attached now, "/dev/sda" (Samsung PSSD T7, serial S4EVNF0M123456, 465.8 GiB, `+diskSSDByID+`), is another disk: its serial number differs`) {
		t.Fatalf("error = %v", err)
	}
	if hint := engine.HintOf(err); !strings.Contains(hint, `either connect the disk "/dev/sda" (serial SOMEONE-ELSES`) || !strings.Contains(hint, `or delete nixpi/journal.jsonl on the SD card to start over onto "/dev/sda"`) {
		t.Errorf("hint = %q, want the two ways on", hint)
	}
	u2 := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
	u2.recordSSD(t)
	u2.env.State.Target.Size++ // same by-id link, different size
	err = steps.NewPartition().Run(context.Background(), u2.env)
	if err == nil || !strings.Contains(err.Error(), `is another disk: its size differs`) {
		t.Fatalf("error = %v", err)
	}
	for _, c := range append(u.run.Calls(), u2.run.Calls()...) {
		if filepath.Base(c[0]) != "lsblk" {
			t.Errorf("ran %q on a disk that is not the recorded one", system.QuoteArgv(c))
		}
	}
}

func TestDiskPartitionRefusesWhenThePlanDrifted(t *testing.T) {
	t.Parallel()
	// Partitioned with 3.7 GiB of RAM; on a later boot preflight reads less
	// (another kernel or gpu_mem), so swap = "ram" plans a smaller swap.
	u := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
	plan := u.recordSSD(t)
	u.tableOf(plan, "/dev/sda")
	u.env.State.RAMBytes -= 2 << 20
	step := steps.NewPartition()
	done, why, err := step.Probe(context.Background(), u.env)
	if done || err != nil {
		t.Fatalf("Probe = %v, %q, %v; want not done", done, why, err)
	}
	err = step.Run(context.Background(), u.env)
	if err == nil || !strings.Contains(err.Error(), `refusing to repartition "/dev/sda": it carries this installation's table`) ||
		!strings.Contains(err.Error(), "2: swap 3792 MiB swap") {
		t.Fatalf("error = %v", err)
	}
	for _, c := range u.run.Calls() {
		if b := filepath.Base(c[0]); b == "sgdisk" || slices.Contains(c, "--all") {
			t.Errorf("ran %q", system.QuoteArgv(c))
		}
	}
}

// formattedSSD scripts a partitioned SSD whose partitions hold what sigs
// returns for each planned partition.
func formattedSSD(t *testing.T, u *diskUnit, sigs func(p disk.Part) []disk.Signature) *disk.Plan {
	plan := u.recordSSD(t)
	u.tableOf(plan, "/dev/sda")
	u.partitionNodes(t, "/dev/sda", plan)
	for _, p := range plan.Parts {
		u.signatures(disk.PartitionNode("/dev/sda", p.Number), sigs(p)...)
	}
	return plan
}

func plannedSignatures(p disk.Part) []disk.Signature {
	uuid := p.FSUUID
	if p.FSType == "vfat" {
		uuid = strings.ToUpper(uuid)
	}
	return []disk.Signature{{Offset: "0x0", Type: p.FSType, Label: p.Label, UUID: uuid}}
}

func TestDiskFormatGolden(t *testing.T) {
	t.Parallel()
	for _, rootFS := range []string{config.FSBtrfs, config.FSExt4} {
		t.Run(rootFS, func(t *testing.T) {
			t.Parallel()
			u := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
			u.env.Config.Layout.RootFS = rootFS
			formattedSSD(t, u, func(disk.Part) []disk.Signature { return nil })
			u.run.On("", u.env.Tools.BtrfsTool, "inspect-internal")
			for _, tool := range []string{u.env.Tools.MkfsFAT, u.env.Tools.Mkswap, u.env.Tools.MkfsBtrfs, u.env.Tools.MkfsExt4, u.env.Tools.Mount, u.env.Tools.Umount} {
				u.run.On("", tool)
			}
			u.run.On("", u.env.Tools.BtrfsTool, "subvolume", "create")
			step := steps.NewFormat()
			if done, _, err := step.Probe(context.Background(), u.env); done || err != nil {
				t.Fatalf("Probe on blank partitions = %v, %v", done, err)
			}
			if err := step.Run(context.Background(), u.env); err != nil {
				t.Fatal(err)
			}
			got := strings.ReplaceAll(u.run.Transcript(), u.env.Root, "$ROOT")
			systemtest.Golden(t, "format-"+rootFS+".argv", got)
		})
	}
}

func TestDiskFormatKeepsPlannedFilesystems(t *testing.T) {
	t.Parallel()
	u := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
	formattedSSD(t, u, plannedSignatures)
	u.run.On("\titem 4 key (FS_TREE ROOT_REF 256) itemoff 14930 itemsize 19\n\t\troot ref key dirid 256 sequence 2 name @\n"+
		"\titem 5 key (FS_TREE ROOT_REF 257) itemoff 14908 itemsize 22\n\t\troot ref key dirid 256 sequence 3 name @nix\n"+
		"\titem 6 key (FS_TREE ROOT_REF 258) itemoff 14886 itemsize 23\n\t\troot ref key dirid 256 sequence 4 name @home\n",
		u.env.Tools.BtrfsTool, "inspect-internal")
	step := steps.NewFormat()
	done, why, err := step.Probe(context.Background(), u.env)
	if !done || err != nil {
		t.Fatalf("Probe = %v, %q, %v; want done", done, why, err)
	}
	if err := step.Run(context.Background(), u.env); err != nil {
		t.Fatal(err)
	}
	for _, c := range u.run.Calls() {
		if b := filepath.Base(c[0]); strings.HasPrefix(b, "mkfs") || b == "mkswap" || b == "mount" || slices.Contains(c, "--all") {
			t.Errorf("ran %q on filesystems that were already as planned", system.QuoteArgv(c))
		}
	}
	if !slices.ContainsFunc(u.logs, func(l string) bool { return strings.Contains(l, "already formatted") }) {
		t.Errorf("no \"already formatted\" in the log: %q", u.logs)
	}
}

// A format step redone after a power cut makes the FAT again even when its
// signature is the planned one (mkfs.fat writes the boot sector before the
// tables); the swap and the root, whose signatures mkswap and mkfs.btrfs
// write last, are kept.
func TestDiskFormatRedoRemakesFAT(t *testing.T) {
	t.Parallel()
	for _, redo := range []bool{false, true} {
		u := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
		plan := formattedSSD(t, u, plannedSignatures)
		u.run.On("\titem 4 key (FS_TREE ROOT_REF 256) itemoff 14930 itemsize 19\n\t\troot ref key dirid 256 sequence 2 name @\n"+
			"\titem 5 key (FS_TREE ROOT_REF 257) itemoff 14908 itemsize 22\n\t\troot ref key dirid 256 sequence 3 name @nix\n"+
			"\titem 6 key (FS_TREE ROOT_REF 258) itemoff 14886 itemsize 23\n\t\troot ref key dirid 256 sequence 4 name @home\n",
			u.env.Tools.BtrfsTool, "inspect-internal")
		u.run.On("", u.env.Tools.MkfsFAT)
		u.env.Redo = redo
		if err := steps.NewFormat().Run(context.Background(), u.env); err != nil {
			t.Fatal(err)
		}
		var made []string
		for _, c := range u.run.Calls() {
			if b := filepath.Base(c[0]); strings.HasPrefix(b, "mkfs") || b == "mkswap" || slices.Contains(c, "--all") {
				made = append(made, system.QuoteArgv(c))
			}
		}
		want := ""
		if redo {
			want = fmt.Sprintf("/usr/sbin/mkfs.fat -F 32 -n boot -i %s /dev/sda1", plan.FATVolumeID)
		}
		if got := strings.Join(made, "\n"); got != want {
			t.Errorf("redo=%v: made %q, want %q", redo, got, want)
		}
	}
}

func TestDiskFormatRefusesForeignFilesystemWithoutWipe(t *testing.T) {
	t.Parallel()
	u := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
	formattedSSD(t, u, func(p disk.Part) []disk.Signature {
		if p.Role == disk.RoleRoot {
			return []disk.Signature{{Offset: "0x438", Type: "ext4", Label: "photos", UUID: "0e4b8b9e-5b0a-4c51-9f1e-0d7f6f0b1c11"}}
		}
		return nil
	})
	u.run.On("", u.env.Tools.MkfsFAT)
	u.run.On("", u.env.Tools.Mkswap)
	err := steps.NewFormat().Run(context.Background(), u.env)
	if err == nil || !strings.Contains(err.Error(), `refusing to format "/dev/sda3": it holds a filesystem signature (ext4 label "photos"`) {
		t.Fatalf("error = %v", err)
	}
	for _, c := range u.run.Calls() {
		if slices.Contains(c, "/dev/sda3") && filepath.Base(c[0]) != "wipefs" || slices.Contains(c, "--all") {
			t.Errorf("touched the foreign filesystem: %q", system.QuoteArgv(c))
		}
	}
}

func TestDiskMountGolden(t *testing.T) {
	t.Parallel()
	u := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
	formattedSSD(t, u, plannedSignatures)
	u.put(t, "/proc/filesystems", "nodev\tproc\n\text4\n\tvfat\n\tbtrfs\n")
	u.run.On("", u.env.Tools.Mount)
	u.run.On("", u.env.Tools.Swapon)
	u.run.On("", u.env.Tools.FsckFAT)
	var crashes []string
	u.env.CrashPoint = func(p string) { crashes = append(crashes, p) }
	step := steps.NewMount()
	if done, _, err := step.Probe(context.Background(), u.env); done || err != nil {
		t.Fatalf("Probe with nothing mounted = %v, %v", done, err)
	}
	if err := step.Run(context.Background(), u.env); err != nil {
		t.Fatal(err)
	}
	systemtest.Golden(t, "mount-btrfs.argv", strings.ReplaceAll(u.run.Transcript(), u.env.Root, "$ROOT"))
	if want := []string{"mount:mnt", "mount:mnt/nix", "mount:mnt/home", "mount:swap", "mount:mnt/boot"}; !slices.Equal(crashes, want) {
		t.Errorf("crash points %q, want %q", crashes, want)
	}

	// What the kernel shows once mounted: Probe says done, Run does nothing.
	r := u.env.Root
	u.put(t, "/proc/self/mountinfo", "22 1 179:2 / / rw - ext4 /dev/root rw\n"+
		"40 22 0:40 /@ "+r+"/mnt rw - btrfs /dev/sda3 rw,subvol=/@\n"+
		"41 40 0:40 /@nix "+r+"/mnt/nix rw - btrfs /dev/sda3 rw,subvol=/@nix\n"+
		"42 40 0:40 /@home "+r+"/mnt/home rw - btrfs /dev/sda3 rw,subvol=/@home\n"+
		"43 40 8:1 / "+r+"/mnt/boot rw - vfat /dev/sda1 rw\n")
	u.put(t, "/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n/dev/sda2                               partition\t3885052\t0\t-2\n")
	if done, why, err := step.Probe(context.Background(), u.env); !done || err != nil {
		t.Fatalf("Probe once mounted = %v, %q, %v", done, why, err)
	}
	before := len(u.run.Calls())
	if err := step.Run(context.Background(), u.env); err != nil {
		t.Fatal(err)
	}
	for _, c := range u.run.Calls()[before:] {
		if b := filepath.Base(c[0]); b == "mount" || b == "swapon" {
			t.Errorf("ran %q with everything mounted", system.QuoteArgv(c))
		}
	}
}

func TestDiskMountRefusesSomethingElseAtMnt(t *testing.T) {
	t.Parallel()
	u := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
	formattedSSD(t, u, plannedSignatures)
	u.put(t, "/proc/self/mountinfo", "22 1 179:2 / / rw - ext4 /dev/root rw\n50 22 8:17 / "+u.env.Path("/mnt")+" rw - exfat /dev/sdb1 rw\n")
	err := steps.NewMount().Run(context.Background(), u.env)
	if err == nil || !strings.Contains(err.Error(), `is already mounted from "/dev/sdb1"`) {
		t.Fatalf("error = %v", err)
	}
	if !strings.Contains(engine.HintOf(err), "umount") {
		t.Errorf("hint = %q", engine.HintOf(err))
	}
}

// TestDiskTargetJournalNamesAnotherDisk: the journal records an install onto
// an SSD that is not attached now; two other USB disks are. The target step
// (its probe failed, so the engine runs it) does not pick one of them: it
// stops, naming the recorded disk and the ones attached, with the two ways
// on, and runs nothing but lsblk.
func TestDiskTargetJournalNamesAnotherDisk(t *testing.T) {
	t.Parallel()
	u := newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi")
	const gone = "/dev/disk/by-id/usb-Crucial_X6_2233CAFE0001-0:0"
	u.env.State.Target = &journal.Disk{Dev: "/dev/sda", ByID: gone, Serial: "2233CAFE0001", Size: 1000204886016, Model: "Crucial X6", IDSeed: "00112233445566778899aabbccddeeff", GPTGUID: "6a3f0c1e-2b4d-8e5f-9a0b-1c2d3e4f5a6b", Partitioned: true}
	want := *u.env.State.Target
	step := steps.NewTarget()
	if done, _, err := step.Probe(context.Background(), u.env); done || err != nil {
		t.Fatalf("Probe = %v, %v; want not done", done, err)
	}
	err := step.Run(context.Background(), u.env)
	for _, s := range []string{
		`the journal records an installation onto disk "/dev/sda" (Crucial X6, serial 2233CAFE0001, 931.5 GiB, ` + gone + `), which is not connected`,
		`(disks attached now: "/dev/sda" (Samsung PSSD T7, serial S4EVNF0M123456`, `"/dev/sdb" (SanDisk Ultra`,
	} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("error = %v\nwant it to contain %s", err, s)
		}
	}
	if hint := engine.HintOf(err); !strings.Contains(hint, "either connect the disk \"/dev/sda\" (Crucial X6") || !strings.Contains(hint, "or delete nixpi/journal.jsonl on the SD card") {
		t.Errorf("hint = %q", hint)
	}
	if *u.env.State.Target != want {
		t.Errorf("the recorded disk changed to %+v", u.env.State.Target)
	}
	for _, c := range u.run.Calls() {
		if filepath.Base(c[0]) != "lsblk" {
			t.Errorf("ran %q", system.QuoteArgv(c))
		}
	}
}
