package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/journal"
)

var testSteps = []string{"preflight", "arm64", "packages", "target", "partition", "format", "mount"}

type ev struct {
	boot  int
	step  string
	event journal.Event
}

// install builds an Install whose journal holds events, with one console
// file per boot containing console (or a default service line).
func install(t *testing.T, events []ev, log string) *Install {
	t.Helper()
	in := &Install{Name: "t", Finished: true, Journal: &journal.Journal{}, InstallLog: log}
	boots := 0
	state, err := json.Marshal(journal.State{Steps: testSteps})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		in.Journal.Entries = append(in.Journal.Entries, journal.Entry{
			Step: e.step, Event: e.event, Boot: e.boot, BootID: fmt.Sprintf("boot-%d", e.boot), State: state,
		})
		boots = max(boots, e.boot)
	}
	dir := t.TempDir()
	for n := 1; n <= boots; n++ {
		path := filepath.Join(dir, fmt.Sprintf("console-%d.log", n))
		if err := os.WriteFile(path, []byte("nixpi: step 1 of 7, preflight\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		in.Boots = append(in.Boots, &BootResult{N: n, Console: path, Source: SourceCard})
	}
	return in
}

func fullRun(boot int) []ev {
	return []ev{
		{boot, "preflight", journal.Start}, {boot, "preflight", journal.Done},
		{boot, "arm64", journal.Skip}, {boot, "packages", journal.Skip},
		{boot, "target", journal.Start}, {boot, "target", journal.Done},
		{boot, "partition", journal.Start}, {boot, "partition", journal.Done},
		{boot, "format", journal.Start}, {boot, "format", journal.Done},
		{boot, "mount", journal.Start}, {boot, "mount", journal.Done},
	}
}

const goodLog = "run: /usr/sbin/mkfs.fat -F 32 -n boot /dev/sda1\nrun: /usr/sbin/mkswap -L swap /dev/sda2\nrun: /usr/sbin/mkfs.btrfs -f -L root /dev/sda3\n"

func TestCheckInstallAcceptsGoodRun(t *testing.T) {
	t.Parallel()
	h := &Harness{WantSteps: testSteps}
	if p := h.CheckInstall(install(t, fullRun(1), goodLog), nil); len(p) != 0 {
		t.Errorf("a good run has problems: %v", p)
	}
}

func TestCheckInstallComparesStepLists(t *testing.T) {
	t.Parallel()
	h := &Harness{WantSteps: append(slices.Clone(testSteps), "nixos")}
	p := h.CheckInstall(install(t, fullRun(1), goodLog), nil)
	if !strings.Contains(strings.Join(p, "\n"), "the service ran steps") {
		t.Errorf("problems %q do not name the different step list", p)
	}
	in := install(t, fullRun(1), goodLog)
	for i := range in.Journal.Entries {
		in.Journal.Entries[i].State = nil
	}
	if p := (&Harness{}).CheckInstall(in, nil); !strings.Contains(strings.Join(p, "\n"), "records no step list") {
		t.Errorf("problems %q do not say the journal has no step list", p)
	}
}

func TestCheckInstallFindsProblems(t *testing.T) {
	t.Parallel()
	h := &Harness{}
	redone := append(fullRun(1), ev{2, "preflight", journal.Start}, ev{2, "preflight", journal.Done},
		ev{2, "format", journal.Start}, ev{2, "format", journal.Done})
	outOfOrder := fullRun(1)
	outOfOrder[8], outOfOrder[6] = outOfOrder[6], outOfOrder[8]
	for _, tc := range []struct {
		name   string
		events []ev
		log    string
		want   string
	}{
		{"step redone after it finished", redone, goodLog, "step format was started again in boot 2 although it finished in boot 1"},
		{"step missing", fullRun(1)[:10], goodLog, "step mount did not finish"},
		{"steps out of order", outOfOrder, goodLog, "ran after step"},
		{"filesystem made twice", fullRun(1), goodLog + "run: /usr/sbin/mkfs.fat -F 32 -n boot /dev/sda1\n", "ran 2 times"},
		{"no filesystems made", fullRun(1), "", "no mkfs"},
		{"a failure", append(fullRun(1)[:9], ev{1, "format", journal.Fail}), goodLog, "step format failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := h.CheckInstall(install(t, tc.events, tc.log), nil)
			if !strings.Contains(strings.Join(p, "\n"), tc.want) {
				t.Errorf("problems %q do not include %q", p, tc.want)
			}
		})
	}
}

func TestCheckCut(t *testing.T) {
	t.Parallel()
	h := &Harness{}
	cut := &Cut{Step: "format", At: "run: /usr/sbin/mkfs.btrfs"}
	interrupted := append(fullRun(1)[:9], fullRun(2)...) // format started in boot 1, never done
	log := goodLog + "run: /usr/sbin/mkfs.btrfs -f -L root /dev/sda3\n"

	in := install(t, interrupted, log)
	in.Cuts = []CutDone{{Boot: 1}}
	os.WriteFile(in.Boots[1].Console, []byte("nixpi:   format was interrupted in boot 1; redoing it from its start\n"), 0o644)
	// fullRun(2) restarts target and partition, which finished in boot 1;
	// a real resume skips them, so only format may appear twice.
	for i, e := range in.Journal.Entries {
		if e.Boot == 2 && (e.Step == "target" || e.Step == "partition") {
			in.Journal.Entries[i].Event = journal.Skip
		}
	}
	if p := h.CheckInstall(in, []*Cut{cut}); len(p) != 0 {
		t.Errorf("a good resume has problems: %v", p)
	}
	// Redoing the interrupted format step may remake the FAT; a cut in
	// partition may not.
	in.InstallLog += "run: /usr/sbin/mkfs.fat -F 32 -n boot /dev/sda1\n"
	if p := h.CheckInstall(in, []*Cut{cut}); len(p) != 0 {
		t.Errorf("remaking the FAT in the interrupted format step is reported: %v", p)
	}
	if p := strings.Join(h.CheckInstall(in, []*Cut{{Step: "partition", At: "sgdisk"}}), "\n"); !strings.Contains(p, "ran 2 times") {
		t.Errorf("a FAT made twice around a cut in partition is not reported: %q", p)
	}

	missed := install(t, append(fullRun(1), fullRun(2)...), log)
	missed.Cuts = []CutDone{{Boot: 1}}
	p := strings.Join(h.CheckInstall(missed, []*Cut{cut}), "\n")
	for _, want := range []string{"finished in the boot that was cut", "no console says step format was interrupted"} {
		if !strings.Contains(p, want) {
			t.Errorf("problems %q do not include %q", p, want)
		}
	}
}

// layoutCase is one layout a config can ask for, with the memory the
// service found (swap = "ram" follows it).
type layoutCase struct {
	name string
	toml string
}

// everyLayout is every layout the config accepts: both tables, both root
// filesystems, swap of a size, of the memory's and none, and the minimal
// config (every [layout] key left to its default).
func everyLayout() []layoutCase {
	var cases []layoutCase
	for _, table := range []string{"gpt", "mbr"} {
		for _, fs := range []string{"btrfs", "ext4"} {
			for _, swap := range []string{"256MiB", "0", "ram"} {
				cases = append(cases, layoutCase{
					name: fmt.Sprintf("%s %s swap %s", table, fs, swap),
					toml: fmt.Sprintf("schema = 1\n[layout]\ntable = %q\nroot_fs = %q\nswap_size = %q\n", table, fs, swap),
				})
			}
		}
	}
	return append(cases, layoutCase{"minimal config", "schema = 1\n"})
}

const testRAM = 2047 << 20

// plannedFor is the plan the disk steps make for the case's config on the
// harness's 16 GiB SSD.
func plannedFor(t *testing.T, tc layoutCase) *disk.Plan {
	t.Helper()
	cfg, err := config.Parse("nixpi.toml", []byte(tc.toml))
	if err != nil {
		t.Fatalf("%s: %v", tc.name, err)
	}
	rec := &journal.Disk{Dev: "/dev/sda", Serial: "NIXPIE2ESSD0001", Size: 16 << 30, IDSeed: "00112233445566778899aabbccddeeff"}
	plan, err := disk.NewPlan(cfg.Layout, testRAM, disk.RecordedIdentity(rec), 512)
	if err != nil {
		t.Fatalf("%s: %v", tc.name, err)
	}
	return plan
}

// installedSpec is what the Inspector reads from an SSD the disk steps
// made as planned: sfdisk's view of the table (upper-case GUIDs for GPT;
// type codes and no names or GUIDs for MBR), blkid's of the filesystems.
func installedSpec(plan *disk.Plan) *DiskSpec {
	spec := &DiskSpec{Label: "gpt", ID: strings.ToUpper(plan.DiskID), SectorSize: plan.SectorSize, FATCheck: "clean"}
	if plan.Table == config.TableMBR {
		spec.Label, spec.ID = "dos", plan.DiskID
	}
	for _, p := range plan.Parts {
		tp := disk.TablePart{Node: fmt.Sprintf("/dev/loop0p%d", p.Number), Start: p.Start, Size: p.Sectors}
		if plan.Table == config.TableGPT {
			tp.Type, tp.UUID, tp.Name = p.GPTType, strings.ToUpper(p.GUID), p.Name
		} else {
			tp.Type = p.MBRType
		}
		uuid := p.FSUUID
		if p.FSType == "vfat" {
			uuid = strings.ToUpper(uuid)
		}
		spec.Partitions = append(spec.Partitions, PartSpec{Number: p.Number, TablePart: tp, FSType: p.FSType, Label: p.Label, FSUUID: uuid})
	}
	spec.Subvolumes = slices.Sorted(slices.Values(plan.Subvolumes))
	return spec
}

// TestCheckSSDEveryLayout: for every layout the config accepts, the SSD
// the disk steps make passes, and each way it can be wrong is reported.
func TestCheckSSDEveryLayout(t *testing.T) {
	t.Parallel()
	for _, tc := range everyLayout() {
		plan := plannedFor(t, tc)
		if p := CheckSSD(installedSpec(plan), plan); len(p) != 0 {
			t.Errorf("%s: the planned layout has problems: %v", tc.name, p)
		}
		root := len(plan.Parts) - 1
		otherTable := "dos"
		if plan.Table == config.TableMBR {
			otherTable = "gpt"
		}
		mutations := []struct {
			name   string
			change func(*DiskSpec)
			want   string
		}{
			{"other table", func(d *DiskSpec) { d.Label = otherTable }, "partition table is " + otherTable},
			{"other disk id", func(d *DiskSpec) { d.ID = "0x0badcafe" }, "disk identifier is 0x0badcafe"},
			{"root label", func(d *DiskSpec) { d.Partitions[root].Label = "nixos" }, `labelled "nixos", want "root"`},
			{"boot too small", func(d *DiskSpec) { d.Partitions[0].Size -= 2048 }, "partition 1: sectors"},
			{"unformatted root", func(d *DiskSpec) { d.Partitions[root].FSType = "" }, `holds "", want ` + plan.Parts[root].FSType},
			{"other root UUID", func(d *DiskSpec) { d.Partitions[root].FSUUID = "53fb4001" }, `filesystem UUID "53fb4001"`},
			{"dirty FAT", func(d *DiskSpec) { d.FATCheck = "Dirty bit is set" }, "fsck.fat"},
			{"a partition missing", func(d *DiskSpec) { d.Partitions = d.Partitions[:root] }, fmt.Sprintf("%d partitions, want %d", root, root+1)},
			{"boot type", func(d *DiskSpec) {
				d.Partitions[0].Type = map[string]string{"gpt": disk.GPTTypeLinux, "mbr": "83"}[plan.Table]
			}, "partition 1: type"},
		}
		if plan.Part(disk.RoleRoot).FSType == config.FSBtrfs {
			mutations = append(mutations, struct {
				name   string
				change func(*DiskSpec)
				want   string
			}{"missing subvolume", func(d *DiskSpec) { d.Subvolumes = []string{"@", "@nix"} }, "btrfs subvolumes"})
		} else {
			mutations = append(mutations, struct {
				name   string
				change func(*DiskSpec)
				want   string
			}{"btrfs where ext4 is planned", func(d *DiskSpec) { d.Subvolumes = []string{"@"} }, "btrfs subvolumes [@], want []"})
		}
		for _, m := range mutations {
			spec := installedSpec(plan)
			m.change(spec)
			if p := strings.Join(CheckSSD(spec, plan), "\n"); !strings.Contains(p, m.want) {
				t.Errorf("%s, %s: problems %q do not include %q", tc.name, m.name, p, m.want)
			}
		}
	}
}

// TestPlannedLayouts: the plans the checks compare with are the layouts
// the configs ask for (the table, swap present or not, the root's
// filesystem), so a check never passes by comparing with the wrong one.
func TestPlannedLayouts(t *testing.T) {
	t.Parallel()
	for _, tc := range everyLayout() {
		plan := plannedFor(t, tc)
		cfg, _ := config.Parse("nixpi.toml", []byte(tc.toml))
		l := cfg.Layout
		if plan.Table != l.Table || plan.Part(disk.RoleRoot).FSType != l.RootFS {
			t.Errorf("%s: plan %s root %s", tc.name, plan.Table, plan.Part(disk.RoleRoot).FSType)
		}
		swap := plan.Part(disk.RoleSwap)
		if wantSwap := l.SwapSize.RAM || l.SwapSize.Bytes > 0; (swap != nil) != wantSwap {
			t.Errorf("%s: swap partition %v, want one: %v", tc.name, swap, wantSwap)
		}
	}
}

func TestCompareSpecs(t *testing.T) {
	t.Parallel()
	plan := plannedFor(t, everyLayout()[0])
	// Each install draws its own IDs: they may differ, the layout may not.
	other := installedSpec(plan)
	other.ID, other.Partitions[0].UUID, other.Partitions[2].FSUUID = "other", "other", "other"
	if p := CompareSpecs("cut", other, installedSpec(plan)); len(p) != 0 {
		t.Errorf("specs that differ only in their IDs are reported: %v", p)
	}
	other = installedSpec(plan)
	other.Partitions[2].Label = "different"
	if p := CompareSpecs("cut", other, installedSpec(plan)); len(p) != 1 {
		t.Errorf("a different root label was not reported: %v", p)
	}
	other = installedSpec(plan)
	other.Partitions[1].Size++
	if p := CompareSpecs("cut", other, installedSpec(plan)); len(p) != 1 {
		t.Errorf("a different swap size was not reported: %v", p)
	}
	if p := CompareSpecs("cut", installedSpec(plan), installedSpec(plan)); len(p) != 0 {
		t.Errorf("equal specs differ: %v", p)
	}
}

func TestCheckRefusal(t *testing.T) {
	t.Parallel()
	refusal := func(msg string) *Install {
		in := install(t, []ev{{1, "preflight", journal.Start}, {1, "preflight", journal.Done}, {1, "target", journal.Start}}, "")
		in.Failed = true
		in.Journal.Entries = append(in.Journal.Entries, journal.Entry{Step: "target", Event: journal.Fail, Boot: 1, Msg: msg, Hint: "set wipe = true"})
		os.WriteFile(in.Boots[0].Console, []byte("nixpi: INSTALL STOPPED: "+msg+"\n"), 0o644)
		return in
	}
	good := `refusing disk "/dev/sda" (serial S1): it holds a filesystem signature (ext4) and target.wipe = false`
	if p := CheckRefusal(refusal(good), "aa", "aa", "S1"); len(p) != 0 {
		t.Errorf("a good refusal has problems: %v", p)
	}
	if p := strings.Join(CheckRefusal(refusal(good), "aa", "bb", "S1"), "\n"); !strings.Contains(p, "the SSD changed") {
		t.Errorf("a changed disk was not reported: %q", p)
	}
	if p := strings.Join(CheckRefusal(refusal("refusing: no"), "aa", "aa", "S1"), "\n"); !strings.Contains(p, "does not name the disk") || !strings.Contains(p, "no console line") {
		t.Errorf("a vague refusal was not reported: %q", p)
	}
}

func TestCheckMounts(t *testing.T) {
	t.Parallel()
	btrfs := `run: /usr/bin/mount -t btrfs -o subvol=@ /dev/sda3 /mnt
run: /usr/bin/mount -t btrfs -o subvol=@nix /dev/sda3 /mnt/nix
run: /usr/bin/mount -t btrfs -o subvol=@home /dev/sda3 /mnt/home
run: /usr/sbin/swapon /dev/sda2
run: /usr/bin/mount -t vfat /dev/sda1 /mnt/boot
`
	ext4 := "run: /usr/bin/mount -t ext4 /dev/sda2 /mnt\nrun: /usr/bin/mount -t vfat /dev/sda1 /mnt/boot\n"
	for _, tc := range everyLayout() {
		plan := plannedFor(t, tc)
		swap := plan.Part(disk.RoleSwap) != nil
		log := btrfs
		if plan.Part(disk.RoleRoot).FSType == config.FSExt4 {
			log = ext4
			if swap {
				log += "run: /usr/sbin/swapon /dev/sda2\n"
			}
		}
		if p := CheckMounts(&Install{Name: "t", InstallLog: log}, plan); len(p) != 0 {
			t.Errorf("%s: a complete mount log has problems: %v", tc.name, p)
		}
		partial := strings.Replace(log, "subvol=@nix /dev/sda3 /mnt/nix", "subvol=@nix /dev/sda3 /mnt/elsewhere", 1)
		partial = strings.Replace(partial, "-t ext4 /dev/sda2 /mnt\n", "-t ext4 /dev/sda2 /mnt/elsewhere\n", 1)
		partial = strings.Replace(partial, "run: /usr/sbin/swapon /dev/sda2\n", "", 1)
		p := strings.Join(CheckMounts(&Install{Name: "t", InstallLog: partial}, plan), "\n")
		wants := []string{"no mount of subvolume @nix at /mnt/nix"}
		if log == ext4 || strings.HasPrefix(log, ext4) {
			wants = []string{"no mount of the ext4 root at /mnt"}
		}
		if swap {
			wants = append(wants, "no swapon")
		}
		for _, want := range wants {
			if !strings.Contains(p, want) {
				t.Errorf("%s: problems %q do not include %q", tc.name, p, want)
			}
		}
	}
}

func TestCheckHookBoot(t *testing.T) {
	t.Parallel()
	base := "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait\n"
	h := &Harness{BootDir: "/boot/firmware", BaseCmdline: base}
	hooked, err := bootfiles.AddHook(base, bootfiles.HookWords(h.BootDir))
	if err != nil {
		t.Fatal(err)
	}
	installed := func(ctx context.Context, card string, paths []string) (map[string]os.FileMode, error) {
		return map[string]os.FileMode{
			"/usr/local/sbin/nixpi-firstboot":                                     0o755,
			"/etc/systemd/system/nixpi-firstboot.service":                         0o644,
			"/etc/systemd/system/multi-user.target.wants/nixpi-firstboot.service": os.ModeSymlink | 0o777,
		}, nil
	}
	hookBoot := func(console, after string) *HookBoot {
		path := filepath.Join(t.TempDir(), "console-1.log")
		if err := os.WriteFile(path, []byte(console), 0o644); err != nil {
			t.Fatal(err)
		}
		return &HookBoot{Boot: &BootResult{N: 1, Console: path}, CmdlineBefore: hooked, CmdlineAfter: after}
	}
	ran := "[\x1b[0;32m  OK  \x1b[0m] Finished \x1b[0;1;39mkernel-command-li…ommand from Kernel Command Line\x1b[0m.\n"
	ctx := context.Background()
	if p := h.CheckHookBoot(ctx, hookBoot(ran, base), installed); len(p) != 0 {
		t.Errorf("a good hook boot has problems: %v", p)
	}
	for _, tc := range []struct {
		name, console, after string
		files                map[string]os.FileMode
		want                 string
	}{
		{"hook left in cmdline.txt", ran, hooked, nil, "still carries the hook"},
		{"other words removed too", ran, strings.Replace(base, " rootwait", "", 1), nil, "not the base image's"},
		{"hook never finished", "Starting kernel-command-li…\n", base, nil, "the hook did not run"},
		{"service ran in the hook boot", ran + "nixpi: step 1 of 7, preflight\n", base, nil, "ran its steps in the hook boot"},
		{"unit not enabled", ran, base, map[string]os.FileMode{"/usr/local/sbin/nixpi-firstboot": 0o755, "/etc/systemd/system/nixpi-firstboot.service": 0o644}, "did not install /etc/systemd/system/multi-user.target.wants"},
		{"binary not executable", ran, base, map[string]os.FileMode{"/usr/local/sbin/nixpi-firstboot": 0o644}, "has mode -rw-r--r--, want -rwxr-xr-x"},
	} {
		files := installed
		if tc.files != nil {
			files = func(context.Context, string, []string) (map[string]os.FileMode, error) { return tc.files, nil }
		}
		p := strings.Join(h.CheckHookBoot(ctx, hookBoot(tc.console, tc.after), files), "\n")
		if !strings.Contains(p, tc.want) {
			t.Errorf("%s: problems %q do not include %q", tc.name, p, tc.want)
		}
	}
}

func TestCheckNixOSBoots(t *testing.T) {
	t.Parallel()
	const system = "/nix/store/00000000000000000000000000000000-nixos-system-nixpi-e2e-26.05"
	console := filepath.Join(t.TempDir(), "console-2.log")
	os.WriteFile(console, []byte("stand-in NixOS: stage 2 of 26.05 (uptime 11.3 s): "+system+"\r\n"+StandInMultiUser+"\r\n"), 0o644)
	in := func(notes ...string) *Install {
		return &Install{Name: "t", HandedOver: true, NixOSBoots: []int{2}, Boots: []*BootResult{
			{N: 1, Source: SourceCard, End: EndReboot},
			{N: 2, Source: SourceUSB, End: EndPowerOff, Console: console, MultiUser: true, Notes: notes},
		}}
	}
	if p := CheckNixOSBoots(in(), system, true); len(p) > 0 {
		t.Errorf("a good boot: %v", p)
	}
	if p := CheckNixOSBoots(in(), system+"-other", true); len(p) != 1 || !strings.Contains(p[0], "does not show stage 2 running") {
		t.Errorf("another system: %v", p)
	}
	if p := CheckNixOSBoots(in("U-Boot: label nixos-default: FDTDIR x: no dtb"), system, true); len(p) != 1 || !strings.Contains(p[0], "FDTDIR") {
		t.Errorf("a note: %v", p)
	}
	if p := CheckNixOSBoots(in(), system+"-other", false); len(p) > 0 {
		t.Errorf("without a bootable stand-in: %v", p)
	}
}
