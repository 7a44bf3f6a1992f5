package qemu

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/journal"
)

// Problems are expectations that did not hold; none means the check passed.
type Problems []string

func (p *Problems) addf(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// The systemd.run= hook runs as the transient kernel-command-line.service.
// systemd shortens "name - description" in the middle to fit the console
// ("kernel-command-li…ommand from Kernel Command Line"), so only the start
// of the name is certain.
var (
	hookUnit     = regexp.MustCompile(`kernel-command-li`)
	hookFinished = regexp.MustCompile(`Finished kernel-command-li`)
)

// CheckHookBoot checks the first boot: the hook ran (systemd started the
// command from the kernel command line), removed exactly its words from
// cmdline.txt, installed the service into the root filesystem, and the
// service itself did not run yet.
func (h *Harness) CheckHookBoot(ctx context.Context, hb *HookBoot, rootFiles func(ctx context.Context, card string, paths []string) (map[string]os.FileMode, error)) Problems {
	var p Problems
	words := bootfiles.HookWords(h.BootDir)
	if !bootfiles.HasHook(hb.CmdlineBefore, words) {
		p.addf("the built card's cmdline.txt has no hook (%q): %q", strings.Join(words, " "), hb.CmdlineBefore)
	}
	if bootfiles.HasHook(hb.CmdlineAfter, words) || strings.Contains(hb.CmdlineAfter, "systemd.run=") {
		p.addf("cmdline.txt still carries the hook after the first boot: %q", hb.CmdlineAfter)
	}
	if want := bootfiles.RemoveHook(hb.CmdlineBefore, words); hb.CmdlineAfter != want {
		p.addf("cmdline.txt after the hook is %q, want exactly the hook's words removed: %q", hb.CmdlineAfter, want)
	}
	if h.BaseCmdline != "" && hb.CmdlineAfter != h.BaseCmdline {
		p.addf("cmdline.txt after the hook is %q, not the base image's %q", hb.CmdlineAfter, h.BaseCmdline)
	}
	raw, err := os.ReadFile(hb.Boot.Console)
	if err != nil {
		p.addf("read the hook boot's console: %v", err)
		return p
	}
	console := []byte(StripANSI(string(raw)))
	if !hookFinished.Match(console) {
		p.addf("the console of the first boot (%s) never shows systemd finishing kernel-command-line.service: the hook did not run", hb.Boot.Console)
	}
	if stepHeader.Match(console) {
		p.addf("the service ran its steps in the hook boot already (%s); it must start on the next boot", hb.Boot.Console)
	}
	if rootFiles != nil {
		want := map[string]os.FileMode{
			"/usr/local/sbin/nixpi-firstboot":                                     0o755,
			"/etc/systemd/system/nixpi-firstboot.service":                         0o644,
			"/etc/systemd/system/multi-user.target.wants/nixpi-firstboot.service": os.ModeSymlink,
		}
		paths := make([]string, 0, len(want))
		for path := range want {
			paths = append(paths, path)
		}
		slices.Sort(paths)
		got, err := rootFiles(ctx, hb.Card, paths)
		if err != nil {
			p.addf("read the card's root filesystem: %v", err)
		}
		for _, path := range paths {
			mode, ok := got[path]
			switch {
			case err != nil:
			case !ok:
				p.addf("the hook did not install %s on the root filesystem", path)
			case want[path] == os.ModeSymlink && mode&os.ModeSymlink == 0:
				p.addf("%s is %v, want a symlink (the unit enabled)", path, mode)
			case want[path] != os.ModeSymlink && mode.Perm() != want[path]:
				p.addf("%s has mode %v, want %v", path, mode.Perm(), want[path])
			}
		}
	}
	return p
}

// CheckInstall checks a finished run from its journal and consoles: every
// step done, in order within each boot, the service running in every boot
// after the hook, and no step done or skipped ever started again (the
// read-only preflight checks run on every boot by design).
func (h *Harness) CheckInstall(in *Install, cuts []*Cut) Problems {
	var p Problems
	if !in.Finished {
		p.addf("%s: the service did not finish (hand the Pi over to the SSD, or report all steps done)", in.Name)
	}
	if in.Journal == nil {
		p.addf("%s: no journal on the card", in.Name)
		return p
	}
	j := in.Journal
	if j.Skipped > 0 {
		p.addf("%s: the journal has %d unreadable lines", in.Name, j.Skipped)
	}
	// The service records its own step list, so the host knows what "all
	// done" means without linking it (the e2e test compares it with steps.All).
	state, err := j.CurrentState()
	if err != nil {
		p.addf("%s: %v", in.Name, err)
	}
	stepNames := state.Steps
	if len(stepNames) == 0 {
		p.addf("%s: the journal records no step list", in.Name)
	}
	if h.WantSteps != nil && !slices.Equal(stepNames, h.WantSteps) {
		p.addf("%s: the service ran steps %v, this source has %v", in.Name, stepNames, h.WantSteps)
	}
	index := map[string]int{}
	for i, s := range stepNames {
		index[s] = i
	}
	finished := map[string]int{} // step -> boot in which it was done/skipped
	lastIndex, lastBoot := -1, 0
	for _, e := range j.Entries {
		i, known := index[e.Step]
		if !known {
			p.addf("%s: journal names unknown step %q", in.Name, e.Step)
			continue
		}
		if e.Boot != lastBoot {
			lastIndex, lastBoot = -1, e.Boot
		}
		if i < lastIndex {
			p.addf("%s: boot %d: step %s ran after step %s", in.Name, e.Boot, e.Step, stepNames[lastIndex])
		}
		lastIndex = i
		switch e.Event {
		case journal.Start:
			if b, ok := finished[e.Step]; ok && !perBootSteps[e.Step] {
				p.addf("%s: step %s was started again in boot %d although it finished in boot %d", in.Name, e.Step, e.Boot, b)
			}
		case journal.Done, journal.Skip:
			if _, ok := finished[e.Step]; !ok {
				finished[e.Step] = e.Boot
			}
		case journal.Fail:
			p.addf("%s: step %s failed in boot %d: %s", in.Name, e.Step, e.Boot, e.Msg)
		}
	}
	for i, s := range stepNames {
		last, ok := j.Last(s)
		if ok && in.HandedOver && i == len(stepNames)-1 && last.Event == journal.Reboot {
			continue // the hand-over's last step ends in its reboot
		}
		if !ok || (last.Event != journal.Done && last.Event != journal.Skip) {
			p.addf("%s: step %s did not finish (last event %q)", in.Name, s, last.Event)
		}
	}
	// The hook ran once, in the hook boot: never again.
	for _, b := range in.Boots {
		if console, err := os.ReadFile(b.Console); err == nil && hookUnit.MatchString(StripANSI(string(console))) {
			p.addf("%s: boot %d ran the hook again (%s mentions kernel-command-line.service)", in.Name, b.N, b.Console)
		}
	}
	// Each boot of the card is a journal boot: the service ran in every one;
	// so is the NixOS boot that confirmed (its confirm unit writes there).
	confirming := 0
	if st, err := j.CurrentState(); err == nil && st.HandOver != nil && st.HandOver.Confirmed != nil {
		confirming = 1
	}
	if n := j.BootNumber(""); len(in.CardBoots())+confirming != n-1 {
		p.addf("%s: %d boots of the card (and %d of NixOS confirming), but the journal saw the service in %d", in.Name, len(in.CardBoots()), confirming, n-1)
	}
	if h.SSDBoots && in.HandedOver && !in.NixOSFrom(SourceUSB) {
		p.addf("%s: the card was retired, but NixOS never came up on the SSD from a USB boot", in.Name)
	}
	for i, cut := range cuts {
		p = append(p, checkCut(in, i, cut)...)
	}
	p = append(p, checkFormatsOnce(in, cuts)...)
	return p
}

// checkFormatsOnce checks, from the commands in install.log, that no
// filesystem was made twice, unless the power was cut inside the format
// step: an interrupted step is redone from its start, and may remake what
// it cannot prove complete (a FAT whose mkfs.fat was cut looks whole).
func checkFormatsOnce(in *Install, cuts []*Cut) Problems {
	var p Problems
	counts := map[string]int{}
	var order []string
	for _, line := range strings.Split(in.InstallLog, "\n") {
		_, argv, ok := strings.Cut(line, "run: ")
		if !ok {
			continue
		}
		tool := filepath.Base(strings.Fields(argv + " x")[0])
		if !strings.HasPrefix(tool, "mkfs.") && tool != "mkswap" {
			continue
		}
		if counts[argv] == 0 {
			order = append(order, argv)
		}
		counts[argv]++
	}
	if len(order) == 0 {
		p.addf("%s: install.log records no mkfs or mkswap command", in.Name)
	}
	allowed := 1
	if slices.ContainsFunc(cuts, func(c *Cut) bool { return c.Step == "format" }) {
		allowed = 2
	}
	for _, argv := range order {
		if counts[argv] > allowed {
			p.addf("%s: %q ran %d times: a filesystem made in a finished step was made again", in.Name, argv, counts[argv])
		}
	}
	return p
}

// checkCut checks that the i-th power cut landed inside its step (it
// started before the cut and did not finish in that boot) and that a later
// boot redid it. Each step is cut at most once.
func checkCut(in *Install, i int, cut *Cut) Problems {
	var p Problems
	if i >= len(in.Cuts) {
		p.addf("%s: the power was never cut (%s)", in.Name, cut)
		return p
	}
	var startedInCut, doneInCut, redone bool
	cutJournalBoot := 0
	for _, e := range in.Journal.Entries {
		if e.Step != cut.Step {
			continue
		}
		switch {
		case e.Event == journal.Start && cutJournalBoot == 0:
			startedInCut, cutJournalBoot = true, e.Boot
		case e.Event == journal.Done && e.Boot == cutJournalBoot:
			doneInCut = true
		case e.Event == journal.Done && e.Boot > cutJournalBoot:
			redone = true
		}
	}
	if !startedInCut {
		p.addf("%s: the journal has no start of step %s before the cut", in.Name, cut.Step)
	}
	if doneInCut {
		p.addf("%s: step %s finished in the boot that was cut: the cut missed the step", in.Name, cut.Step)
	}
	if !redone {
		p.addf("%s: step %s was not finished in a later boot", in.Name, cut.Step)
	}
	consoles, err := in.Consoles()
	if err == nil && !strings.Contains(consoles, cut.Step+" was interrupted") {
		p.addf("%s: no console says step %s was interrupted and redone", in.Name, cut.Step)
	}
	return p
}

// perBootSteps run again on every boot by design (verify checks the SSD again
// before the trial after the EEPROM reboot): the read-only preflight
// checks, and what a reboot undoes (the mounts under /mnt, the network).
var perBootSteps = map[string]bool{"preflight": true, "mount": true, "network": true, "verify": true}

// CheckSSD checks the SSD against the layout the disk steps plan for the
// config on this disk (disk.NewPlan, as the partition and format steps
// call it): the table of either kind, its disk id, every partition's extent,
// type, GUID and name, the filesystem, label and UUID the format step makes
// on it, the btrfs subvolumes, and a clean FAT.
func CheckSSD(spec *DiskSpec, plan *disk.Plan) Problems {
	var p Problems
	if diff := plan.Compare(spec.Table()); diff != "" {
		p.addf("the SSD's partition table is not the planned one (%s): %s:\n%s", plan.Table, diff, spec)
		return p
	}
	for i, want := range plan.Parts {
		got := spec.Partitions[i]
		if got.Number != want.Number {
			p.addf("partition %d (%s) is numbered %d", want.Number, want.Role, got.Number)
		}
		if got.FSType != want.FSType {
			p.addf("partition %d (%s) holds %q, want %s", want.Number, want.Role, got.FSType, want.FSType)
		}
		if got.Label != want.Label {
			p.addf("partition %d (%s) is labelled %q, want %q", want.Number, want.Role, got.Label, want.Label)
		}
		if !strings.EqualFold(got.FSUUID, want.FSUUID) {
			p.addf("partition %d (%s) has filesystem UUID %q, want %s", want.Number, want.Role, got.FSUUID, want.FSUUID)
		}
	}
	wantSubs := slices.Clone(plan.Subvolumes)
	slices.Sort(wantSubs)
	if !slices.Equal(spec.Subvolumes, wantSubs) {
		p.addf("btrfs subvolumes %v, want %v", spec.Subvolumes, wantSubs)
	}
	if spec.FATCheck != "clean" {
		p.addf("fsck.fat -n on the boot partition: %s", spec.FATCheck)
	}
	return p
}

// CheckMounts checks, from the commands in install.log, that the service
// mounted what the plan lays out under /mnt (the guest's mounts cannot be
// seen from the host after power-off): the root (each btrfs subvolume at
// its path), the boot partition at /mnt/boot, and the swap turned on.
func CheckMounts(in *Install, plan *disk.Plan) Problems {
	var p Problems
	var runs []string
	for _, line := range strings.Split(in.InstallLog, "\n") {
		if _, argv, ok := strings.Cut(line, "run: "); ok {
			runs = append(runs, argv)
		}
	}
	ran := func(parts ...string) bool {
		for _, argv := range runs {
			fields := strings.Fields(argv)
			if len(fields) == 0 {
				continue
			}
			var words []string // arguments, and each option of "-o a,b"
			for _, f := range fields[1:] {
				words = append(words, f)
				words = append(words, strings.Split(f, ",")...)
			}
			all := true
			for _, part := range parts {
				if !slices.Contains(words, part) && filepath.Base(fields[0]) != part {
					all = false
					break
				}
			}
			if all {
				return true
			}
		}
		return false
	}
	if root := plan.Part(disk.RoleRoot); root.FSType == config.FSBtrfs {
		for _, m := range (config.Layout{Subvolumes: plan.Subvolumes}).SubvolumeMounts() {
			target := filepath.Join("/mnt", m.Path)
			if !ran("mount", "subvol="+m.Subvolume, target) {
				p.addf("%s: install.log shows no mount of subvolume %s at %s", in.Name, m.Subvolume, target)
			}
		}
	} else if !ran("mount", "-t", root.FSType, "/mnt") {
		p.addf("%s: install.log shows no mount of the %s root at /mnt", in.Name, root.FSType)
	}
	if !ran("mount", "/mnt/boot") {
		p.addf("%s: install.log shows no mount of the boot partition at /mnt/boot", in.Name)
	}
	if plan.Part(disk.RoleSwap) != nil && !ran("swapon") {
		p.addf("%s: install.log shows no swapon", in.Name)
	}
	return p
}

// CompareSpecs reports how got differs from want (the uninterrupted run).
func CompareSpecs(name string, got, want *DiskSpec) Problems {
	var p Problems
	if g, w := got.withoutIDs().String(), want.withoutIDs().String(); g != w {
		p.addf("%s: the SSD differs from the uninterrupted run's:\n got: %s\nwant: %s", name, g, w)
	}
	return p
}

// CheckRefusal checks a run against an SSD the config does not allow
// wiping: the service failed in the target step, saying which disk and why,
// on the console and in the journal, and the disk is byte-identical.
func CheckRefusal(in *Install, sumBefore, sumAfter, serial string) Problems {
	var p Problems
	if sumBefore != sumAfter {
		p.addf("%s: the SSD changed: sha256 %s before, %s after", in.Name, sumBefore, sumAfter)
	}
	if !in.Failed || in.Journal == nil || len(in.Journal.Entries) == 0 {
		p.addf("%s: the service did not record a refusal", in.Name)
		return p
	}
	last := in.Journal.Entries[len(in.Journal.Entries)-1]
	if last.Event != journal.Fail || last.Step != "target" {
		p.addf("%s: the journal ends with %s %s, want a failure of step target", in.Name, last.Step, last.Event)
	}
	names := []string{"/dev/sda", serial}
	mentions := func(s string) bool {
		for _, n := range names {
			if strings.Contains(s, n) {
				return true
			}
		}
		return false
	}
	if !mentions(last.Msg) || !strings.Contains(last.Msg, "ext4") {
		p.addf("%s: the journal's refusal %q does not name the disk (%s) and what it holds (ext4)", in.Name, last.Msg, strings.Join(names, " or "))
	}
	if !strings.Contains(last.Msg+last.Hint, "wipe") {
		p.addf("%s: the refusal does not say how to allow it (wipe): %q, hint %q", in.Name, last.Msg, last.Hint)
	}
	consoles, err := in.Consoles()
	if err != nil {
		p.addf("%s: %v", in.Name, err)
		return p
	}
	found := false
	for _, line := range strings.Split(consoles, "\n") {
		if mentions(line) && strings.Contains(line, "ext4") {
			found = true
			break
		}
	}
	if !found {
		p.addf("%s: no console line names the disk and the ext4 it holds", in.Name)
	}
	return p
}

// RootFiles returns, for each path that exists on the card's root
// filesystem (partition 2, mounted read-only through a loop device), its
// mode. It needs root.
func (in *Inspector) RootFiles(ctx context.Context, card string, paths []string) (map[string]os.FileMode, error) {
	modes := map[string]os.FileMode{}
	err := in.withCardRoot(ctx, card, func(mnt string) error {
		for _, p := range paths {
			if info, err := os.Lstat(filepath.Join(mnt, p)); err == nil {
				modes[p] = info.Mode()
			}
		}
		return nil
	})
	return modes, err
}

// CheckNixOSBoots checks the boots of the SSD a run made with a bootable
// stand-in: the firmware and U-Boot made each without a complaint (Notes),
// and each that reached multi-user.target ran the system the journal
// recorded. (CheckInstall wants one from USB to reach it.)
func CheckNixOSBoots(in *Install, systemPath string, ssdBoots bool) Problems {
	var p Problems
	if !ssdBoots || !in.HandedOver {
		return p
	}
	for _, b := range in.Boots {
		if b.Source == SourceCard {
			continue
		}
		for _, note := range b.Notes {
			p.addf("%s: boot %d from %s: %s", in.Name, b.N, b.Source, note)
		}
		if !b.MultiUser {
			continue
		}
		if console, err := os.ReadFile(b.Console); err != nil || !strings.Contains(strings.ReplaceAll(string(console), "\r", ""), ": "+systemPath+"\n") {
			p.addf("%s: boot %d from %s: the console (%s) does not show stage 2 running %s (%v)", in.Name, b.N, b.Source, b.Console, systemPath, err)
		}
	}
	return p
}

// standInLines are the stand-in NixOS's lines of a boot's console, for the
// log.
func standInLines(b *BootResult) string {
	if b.End == EndNoBoot {
		return "  no boot: " + b.Reason
	}
	data, err := os.ReadFile(b.Console)
	if err != nil {
		return "  " + err.Error()
	}
	var lines []string
	for _, l := range strings.Split(StripANSI(strings.ReplaceAll(string(data), "\r", "")), "\n") {
		if strings.Contains(l, "stand-in NixOS") || rebootCommand.MatchString(l) || strings.Contains(l, "reboot: ") {
			lines = append(lines, "  "+l)
		}
	}
	return strings.Join(lines, "\n")
}

// BaseEEPROM is the bootloader a Pi with this base image's card has: the
// newest pieeprom-*.bin where Raspberry Pi OS's rpi-eeprom package keeps
// them (BootloaderDir); nil when the base has none.
func (in *Inspector) BaseEEPROM(ctx context.Context, base string) (*EEPROM, error) {
	var state *EEPROM
	err := in.withCardRoot(ctx, base, func(mnt string) error {
		dir, err := resolveIn(mnt, BootloaderDir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil {
			return err
		}
		images, _ := filepath.Glob(filepath.Join(mnt, dir, "pieeprom-*.bin"))
		if len(images) == 0 {
			return nil
		}
		// The names carry the release date: the last is the newest.
		slices.Sort(images)
		data, err := os.ReadFile(images[len(images)-1])
		if err != nil {
			return err
		}
		if state, err = EEPROMFromImage(data); err != nil {
			return fmt.Errorf("the base image's %s: %w", filepath.Join(BootloaderDir, filepath.Base(images[len(images)-1])), err)
		}
		return nil
	})
	return state, err
}

// CopyRootFile copies one file out of the card's root filesystem.
func (in *Inspector) CopyRootFile(ctx context.Context, card, path, dst string) error {
	return in.withCardRoot(ctx, card, func(mnt string) error {
		src, err := resolveIn(mnt, path)
		if err != nil {
			return fmt.Errorf("%s on %s: %w", path, card, err)
		}
		data, err := os.ReadFile(filepath.Join(mnt, src))
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o755)
	})
}

// withCardRoot mounts the card's root filesystem (partition 2) read-only
// through a loop device for fn. It needs root.
func (in *Inspector) withCardRoot(ctx context.Context, card string, fn func(mnt string) error) error {
	t := in.Tools
	out, err := run(ctx, in.Run, t.Losetup, "--find", "--show", "--read-only", "--partscan", card)
	if err != nil {
		return err
	}
	loop := strings.TrimSpace(out)
	defer run(context.WithoutCancel(ctx), in.Run, t.Losetup, "--detach", loop)
	dev := loop + "p2"
	if err := waitForNode(ctx, in, loop, dev); err != nil {
		return err
	}
	mnt, err := os.MkdirTemp(in.TempDir, "root-")
	if err != nil {
		return err
	}
	defer os.Remove(mnt)
	// noload: never replay the journal of a card under test.
	if _, err := run(ctx, in.Run, t.Mount, "-t", "ext4", "-o", "ro,noload", dev, mnt); err != nil {
		return err
	}
	defer run(context.WithoutCancel(ctx), in.Run, t.Umount, mnt)
	return fn(mnt)
}

// WithInstalledSSD shows fn an installed SSD as the installed system sees
// it: root is its root filesystem (or subvolumes) mounted read-only, boot
// the FAT's files (copied out with mtools: this host's kernel may have no
// vfat). The plan names the partitions (by number, in either table). It
// needs root.
func (in *Inspector) WithInstalledSSD(ctx context.Context, img string, spec *DiskSpec, plan *disk.Plan, fn func(root, boot string) error) error {
	t := in.Tools
	var bootPart *PartSpec
	wantBoot, wantRoot := plan.Part(disk.RoleBoot), plan.Part(disk.RoleRoot)
	rootN := 0
	for i, p := range spec.Partitions {
		switch p.Number {
		case wantBoot.Number:
			bootPart = &spec.Partitions[i]
		case wantRoot.Number:
			rootN = p.Number
		}
	}
	if bootPart == nil || rootN == 0 {
		return fmt.Errorf("the SSD has no partition %d (boot) or %d (root):\n%s", wantBoot.Number, wantRoot.Number, spec)
	}
	boot, err := os.MkdirTemp(in.TempDir, "ssd-boot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(boot)
	fat := fmt.Sprintf("%s@@%d", img, bootPart.Start*spec.SectorSize)
	// mcopy fails on an empty FAT ("::*" not found): then boot stays empty
	// and the checks say what is missing.
	if _, err := run(ctx, in.Run, t.Mcopy, "-s", "-n", "-i", fat, "::*", boot+"/"); err != nil && !strings.Contains(err.Error(), `"::*" not found`) {
		return fmt.Errorf("copy the SSD's boot partition: %w", err)
	}
	out, err := run(ctx, in.Run, t.Losetup, "--find", "--show", "--read-only", "--partscan", img)
	if err != nil {
		return err
	}
	loop := strings.TrimSpace(out)
	defer run(context.WithoutCancel(ctx), in.Run, t.Losetup, "--detach", loop)
	rootDev := fmt.Sprintf("%sp%d", loop, rootN)
	if err := waitForNode(ctx, in, loop, rootDev); err != nil {
		return err
	}
	mnt, err := os.MkdirTemp(in.TempDir, "ssd-")
	if err != nil {
		return err
	}
	defer os.Remove(mnt)
	var mounted []string
	defer func() {
		for i := len(mounted) - 1; i >= 0; i-- {
			run(context.WithoutCancel(ctx), in.Run, t.Umount, mounted[i])
		}
	}()
	mount := func(fstype, opts, at string) error {
		if _, err := run(ctx, in.Run, t.Mount, "-t", fstype, "-o", opts, rootDev, at); err != nil {
			return err
		}
		mounted = append(mounted, at)
		return nil
	}
	if wantRoot.FSType == config.FSBtrfs {
		for _, m := range (config.Layout{Subvolumes: plan.Subvolumes}).SubvolumeMounts() {
			if err := mount("btrfs", "ro,subvol="+m.Subvolume, filepath.Join(mnt, m.Path)); err != nil {
				return err
			}
		}
	} else if err := mount(wantRoot.FSType, "ro,noload", mnt); err != nil {
		return err
	}
	return fn(mnt, boot)
}
