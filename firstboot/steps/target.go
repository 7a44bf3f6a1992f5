package steps

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nixpi/nixpi/firstboot/blockdev"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
)

// targetStep picks the USB disk to install onto and records its identity. It
// only reads: every later step works on the disk recorded here and refuses a
// disk whose identity no longer matches.
type targetStep struct{}

// NewTarget returns the step that chooses the target disk.
func NewTarget() engine.Step { return targetStep{} }

func (targetStep) Name() string    { return "target" }
func (targetStep) Needs() []string { return nil }
func (targetStep) Describe() string {
	return "choose the USB disk to install onto (refusing any disk it may not wipe)"
}

func (targetStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	if env.State == nil || env.State.Target == nil {
		return false, "no target disk chosen yet", nil
	}
	dev, err := recordedDisk(ctx, env)
	if err != nil {
		return false, err.Error(), nil
	}
	if env.TargetOverride != "" {
		want, err := disk.ResolveDevLink(env.Root, env.TargetOverride)
		if err != nil || want != dev.DevPath() {
			return false, fmt.Sprintf("--target %q is not the recorded disk %q", env.TargetOverride, dev.DevPath()), nil
		}
	} else if cfg := env.Config.Target; (cfg.Serial != "" && cfg.Serial != dev.Serial) ||
		(strings.HasPrefix(cfg.Disk, config.DiskByID) && !hasLink(env, dev, cfg.Disk)) {
		// The config was edited to choose another disk since.
		return false, fmt.Sprintf("the recorded disk %q does not match %s", dev.DevPath(), describeSelector(cfg)), nil
	}
	return true, fmt.Sprintf("target disk %s already chosen", describeDisk(dev, env.State.Target.ByID)), nil
}

func (targetStep) Run(ctx context.Context, env *engine.Env) error {
	if env.State == nil {
		return errors.New("target: no state to record the disk in")
	}
	if rec := env.State.Target; rec != nil && !selectionChanged(env, rec) {
		// The journal names a disk and nothing asks for another: this
		// installation goes on with that disk or stops, never picks another.
		d, err := recordedDisk(ctx, env)
		if err != nil {
			return err
		}
		env.Logf("target disk %s, recorded in the journal: resuming this installation's earlier partial work on it", describeDisk(d, rec.ByID))
		return nil
	}
	devs, err := disk.List(ctx, env.Run, env.Tools.Lsblk)
	if err != nil {
		return err
	}
	mounts, err := disk.ReadMountInfo(env.Root)
	if err != nil {
		return err
	}
	bootDisks := findBootDisks(env, devs, mounts)

	var chosen *disk.Device
	if env.TargetOverride != "" {
		if chosen, err = overrideDisk(env, devs); err != nil {
			return err
		}
	} else {
		// A USB disk can enumerate a few seconds after the service starts:
		// wait (bounded) before calling "no disk" a refusal.
		for attempt := 1; ; attempt++ {
			chosen, err = discover(env, devs, bootDisks)
			if !errors.Is(err, errNoDisk) || attempt > diskWaitTries {
				break
			}
			if attempt == 1 {
				env.Logf("no USB disk matches %s yet; waiting up to %s for one", describeSelector(env.Config.Target), diskWaitTries*diskWaitEvery)
			}
			if err := env.Wait(ctx, diskWaitEvery); err != nil {
				return err
			}
			if devs, err = disk.List(ctx, env.Run, env.Tools.Lsblk); err != nil {
				return err
			}
		}
		if err != nil {
			return err
		}
	}
	byID, err := preferredByID(env, chosen)
	if err != nil {
		return err
	}
	name := describeDisk(chosen, byID)

	if why, ok := bootDisks[chosen.DevPath()]; ok {
		return engine.WithHint(fmt.Errorf("refusing disk %q: it %s", chosen.DevPath(), why),
			"the install target must be a separate USB disk; connect the SSD and choose it with target.disk or target.serial")
	}
	if chosen.RO {
		return engine.WithHint(fmt.Errorf("refusing disk %q: it is read-only", chosen.DevPath()),
			"check the disk's write-protect switch or use another disk")
	}
	if err := checkBootable(env, chosen, name); err != nil {
		return err
	}
	cfg := env.Config.Target
	if min := int64(cfg.MinSize); chosen.SizeBytes() < min {
		return engine.WithHint(fmt.Errorf("refusing disk %s: it is smaller than target.min_size = %s", name, cfg.MinSize),
			"use a larger disk, or lower target.min_size in nixpi/nixpi.toml")
	}
	id := identityOf(chosen, byID)
	if id.Seed, err = idSeed(env, id); err != nil {
		return err
	}
	plan, err := disk.NewPlan(env.Config.Layout, ramBytes(env), id, chosen.SectorSize())
	if errors.Is(err, disk.ErrTooSmall) {
		return engine.WithHint(fmt.Errorf("refusing disk %s: %w", name, err),
			"use a larger disk, or make layout.boot_size / layout.swap_size smaller in nixpi/nixpi.toml")
	}
	if err != nil {
		return fmt.Errorf("plan the layout of %q: %w", chosen.DevPath(), err)
	}
	if err := checkNotInUse(env, chosen); err != nil {
		return err
	}
	table, _, err := disk.ReadTable(ctx, env.Run, env.Tools, chosen.DevPath())
	if err != nil {
		return err
	}
	if resumable(env, id, plan, table) {
		env.Logf("disk %s carries this installation's earlier partial work (disk id %s): resuming", name, table.ID)
	} else if found, err := checkBlank(ctx, env, chosen, plan); err != nil {
		return err
	} else if len(found) > 0 {
		held := describeFindings(ctx, env, chosen, table, found)
		if !cfg.Wipe {
			return refuseNotBlank(fmt.Sprintf("refusing disk %s", name), held)
		}
		env.Logf("disk %s is not blank: it holds %s; target.wipe = true, so the partition step will erase it", name, held)
	}
	rec := &journal.Disk{
		Dev:     chosen.DevPath(),
		ByID:    byID,
		Serial:  chosen.Serial,
		Size:    chosen.SizeBytes(),
		GPTGUID: plan.DiskID,
		Model:   modelOf(chosen),
		IDSeed:  id.Seed,
	}
	if old := env.State.Target; resumable(env, id, plan, table) {
		rec.FoundID, rec.Partitioned = old.FoundID, old.Partitioned
	} else if table != nil {
		rec.FoundID = table.ID
	}
	env.State.Target = rec
	env.Logf("target disk: %s", name)
	return nil
}

// errNoDisk is discovery finding no matching disk (yet).
var errNoDisk = errors.New("no USB disk")

// How long the disk steps wait for a USB disk to show up.
const (
	diskWaitTries = 30
	diskWaitEvery = time.Second
)

// discover applies the config's selection to the USB disks.
func discover(env *engine.Env, devs []disk.Device, bootDisks map[string]string) (*disk.Device, error) {
	cfg := env.Config.Target
	var usb []*disk.Device
	for i := range devs {
		d := &devs[i]
		if d.Type == "disk" && d.Tran == "usb" && d.SizeBytes() > 0 {
			if _, boot := bootDisks[d.DevPath()]; !boot {
				usb = append(usb, d)
			}
		}
	}
	var wantDev string
	if strings.HasPrefix(cfg.Disk, config.DiskByID) {
		dev, err := disk.ResolveDevLink(env.Root, cfg.Disk)
		if err != nil {
			return nil, engine.WithHint(fmt.Errorf("%w at target.disk = %q: %w", errNoDisk, cfg.Disk, err),
				fmt.Sprintf("connect that disk, or pick one of the USB disks found (%s)", listDisks(env, usb)))
		}
		wantDev = dev
	}
	var matches []*disk.Device
	for _, d := range usb {
		if wantDev != "" && d.DevPath() != wantDev {
			continue
		}
		if cfg.Serial != "" && d.Serial != cfg.Serial {
			continue
		}
		matches = append(matches, d)
	}
	selector := describeSelector(cfg)
	switch {
	case wantDev != "" && len(matches) == 0 && cfg.Serial == "":
		if _, boot := bootDisks[wantDev]; boot {
			return nil, engine.WithHint(fmt.Errorf("refusing disk %q (target.disk = %q): it %s", wantDev, cfg.Disk, bootDisks[wantDev]),
				"choose the USB SSD, not the disk the running system is on")
		}
		return nil, engine.WithHint(fmt.Errorf("refusing disk %q (target.disk = %q): it is not a USB mass-storage disk", wantDev, cfg.Disk),
			"nixpi installs onto a USB disk only; to install onto another disk on purpose, run nixpi-firstboot with --target")
	case len(matches) == 0:
		return nil, engine.WithHint(fmt.Errorf("%w matches %s (USB disks found: %s)", errNoDisk, selector, listDisks(env, usb)),
			"connect the USB SSD (directly, not through a hub if it is not detected), or fix the [target] section of nixpi/nixpi.toml")
	case len(matches) > 1:
		return nil, engine.WithHint(fmt.Errorf("%d USB disks match %s: %s; refusing to guess", len(matches), selector, listDisks(env, matches)),
			"set target.disk to one disk's /dev/disk/by-id/ path or target.serial to its serial in nixpi/nixpi.toml, or disconnect the other disks")
	}
	return matches[0], nil
}

// overrideDisk is --target: any whole disk, USB or not; the other checks
// still apply.
func overrideDisk(env *engine.Env, devs []disk.Device) (*disk.Device, error) {
	dev, err := disk.ResolveDevLink(env.Root, env.TargetOverride)
	if err != nil {
		return nil, engine.WithHint(fmt.Errorf("--target %q: %w", env.TargetOverride, err), "give an existing disk, e.g. /dev/sda or a /dev/disk/by-id/ path")
	}
	for i := range devs {
		if devs[i].DevPath() == dev {
			if devs[i].Type != "disk" && devs[i].Type != "loop" {
				return nil, fmt.Errorf("--target %q: %q is a %s, not a disk", env.TargetOverride, dev, devs[i].Type)
			}
			return &devs[i], nil
		}
	}
	if d := disk.Find(devs, dev); d != nil {
		top := disk.TopOf(devs, dev)
		if d.Type == "part" && top != nil {
			return nil, engine.WithHint(fmt.Errorf("--target %q: %q is a partition of %q: name the whole disk", env.TargetOverride, dev, top.DevPath()),
				fmt.Sprintf("use --target %s (everything on the whole disk is replaced)", top.DevPath()))
		}
		return nil, engine.WithHint(fmt.Errorf("--target %q: %q is a %s, not a whole disk", env.TargetOverride, dev, d.Type),
			"give the whole disk (e.g. /dev/sda, not /dev/sda1)")
	}
	return nil, fmt.Errorf("--target %q: no block device %q", env.TargetOverride, dev)
}

// findBootDisks maps the disks that hold / or the FAT boot directory to why.
// A mount is matched by its device number, and by its source path for
// filesystems (btrfs) whose st_dev is not the block device's.
func findBootDisks(env *engine.Env, devs []disk.Device, mounts []disk.Mount) map[string]string {
	boot := map[string]string{}
	for _, p := range []struct{ path, why string }{
		{"/", "holds the running system (/)"},
		{env.BootDir, fmt.Sprintf("holds the boot partition (%s)", env.BootDir)},
	} {
		if p.path == "" {
			continue
		}
		m := blockdev.MountOf(mounts, env.Path(p.path))
		if m == nil {
			continue
		}
		top := disk.TopOf(devs, m.MajMin)
		if top == nil && strings.HasPrefix(m.Source, "/dev/") {
			top = disk.TopOf(devs, m.Source)
		}
		if top != nil {
			if _, ok := boot[top.DevPath()]; !ok {
				boot[top.DevPath()] = p.why
			}
		}
	}
	return boot
}

// checkBootable refuses, before anything is written, a disk the Pi 4
// cannot boot from whatever the layout: one with logical sectors other than
// 512 bytes (the bootloader), one of 2^32 sectors (2 TiB) or more (U-Boot).
// It applies to --target too.
func checkBootable(env *engine.Env, d *disk.Device, name string) error {
	ss, err := disk.LogicalBlockSize(env.Root, d)
	if err != nil {
		return engine.WithHint(fmt.Errorf("refusing disk %s: %w", name, err),
			"check that the disk is attached and shows in lsblk, then start again")
	}
	if ss != disk.BootableSectorSize {
		return engine.WithHint(fmt.Errorf("refusing disk %s: it has %d-byte logical sectors, and the Raspberry Pi 4's bootloader boots only from a USB disk with %d-byte ones (it stops with \"MSD unsupported block size %d\")",
			name, ss, disk.BootableSectorSize, ss),
			"nothing was written to it: use another disk, or put this one in another USB enclosure (many USB-to-SATA/NVMe bridges present 512-byte sectors; lsblk -o NAME,LOG-SEC shows what the Pi sees)")
	}
	if sectors := d.SizeBytes() / ss; sectors > disk.MaxBootableSectors {
		return engine.WithHint(fmt.Errorf("refusing disk %s: it has %d sectors, 2 TiB or more, and the Pi's U-Boot reads a USB disk's size with READ CAPACITY(10) only, which cannot tell more than %d: it would reject the GPT and stop at its prompt, and an MBR cannot address more than 2 TiB",
			name, sectors, int64(disk.MaxBootableSectors)),
			"nothing was written to it: use a disk smaller than 2 TiB (a \"2 TB\" SSD is 1.8 TiB and works)")
	}
	return nil
}

// checkNotInUse refuses, before anything is written, a disk that is in
// use through any of its devices, naming each use (blockdev's model, which
// nixpi flash shares): mounted in any mount namespace, active swap, held
// by another device (device mapper, RAID, LVM), backing a loop device
// directly, stacked or through a file on it, and what is mounted from
// those. Last, the disk is opened exclusively, as mkfs would open it: the
// kernel refuses that while anything at all holds it.
func checkNotInUse(env *engine.Env, d *disk.Device) error {
	dev, err := blockdev.ParseDev(d.MajMin)
	if err != nil {
		return fmt.Errorf("disk %q: lsblk gives no device number: %w", d.DevPath(), err)
	}
	bd, err := blockdev.Probe(env.Root, dev, env.Path(d.DevPath()))
	if err != nil {
		return engine.WithHint(fmt.Errorf("refusing disk %q: %w", d.DevPath(), err),
			"check that the disk is attached and shows in lsblk, then start again")
	}
	uses, err := bd.Uses()
	if err != nil {
		return err
	}
	if len(uses) == 0 {
		if uses, err = bd.Busy(); err != nil {
			return fmt.Errorf("disk %q: %w", d.DevPath(), err)
		}
	}
	if len(uses) > 0 {
		return engine.WithHint(fmt.Errorf("refusing disk %q: it is in use: %s", d.DevPath(), blockdev.Join(uses)),
			"unmount it (in every container too), turn its swap off, detach the loop devices and remove the device-mapper/RAID users named (or pick another disk), then start again")
	}
	return nil
}

// resumable says whether a disk is this installation's own earlier partial
// work: the journal recorded this same disk, and the table on it is the one
// this installation writes (its disk GUID, or a conversion cut short).
func resumable(env *engine.Env, id disk.Identity, plan *disk.Plan, table *disk.Table) bool {
	t := env.State.Target
	if t == nil || t.Serial != id.Serial || t.ByID != id.ByID || t.Size != id.Size || t.IDSeed != id.Seed {
		return false
	}
	return plan.IsOurs(table, t.GPTGUID)
}

// idSeed is the seed of the derived IDs: the recorded one while the journal
// names this same disk (a rerun of the target step derives the same IDs),
// a new one otherwise.
func idSeed(env *engine.Env, id disk.Identity) (string, error) {
	if r := env.State.Target; r != nil && r.IDSeed != "" && r.Serial == id.Serial && r.ByID == id.ByID && r.Size == id.Size {
		return r.IDSeed, nil
	}
	return disk.NewIDSeed(machineSerial(env), rand.Reader)
}

// machineSerial is the Pi's serial number: the device tree's (Pi 5 and
// later kernels) or /proc/cpuinfo's "Serial" line; "" elsewhere.
func machineSerial(env *engine.Env) string {
	if b, err := os.ReadFile(env.Path("/sys/firmware/devicetree/base/serial-number")); err == nil {
		if s := strings.TrimSpace(strings.TrimRight(string(b), "\x00")); s != "" {
			return s
		}
	}
	data, _ := os.ReadFile(env.Path("/proc/cpuinfo"))
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "Serial" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// modelOf is a disk's vendor and model as one string.
func modelOf(d *disk.Device) string {
	return strings.TrimSpace(strings.TrimSpace(d.Vendor) + " " + strings.TrimSpace(d.Model))
}

func topLevel(devs []disk.Device, path string) *disk.Device {
	for i := range devs {
		if devs[i].DevPath() == path {
			return &devs[i]
		}
	}
	return nil
}

func hasLink(env *engine.Env, d *disk.Device, link string) bool {
	links, _ := disk.ByIDLinks(env.Root, d.DevPath())
	return slices.Contains(links, link)
}

func preferredByID(env *engine.Env, d *disk.Device) (string, error) {
	links, err := disk.ByIDLinks(env.Root, d.DevPath())
	if err != nil {
		return "", err
	}
	return disk.PreferredByID(links), nil
}

func identityOf(d *disk.Device, byID string) disk.Identity {
	return disk.Identity{ByID: byID, Serial: d.Serial, Size: d.SizeBytes()}
}

// attachedDisks lists the whole disks lsblk shows, for a message.
func attachedDisks(ctx context.Context, env *engine.Env) string {
	devs, err := disk.List(ctx, env.Run, env.Tools.Lsblk)
	if err != nil {
		return "unknown: " + err.Error()
	}
	var ds []*disk.Device
	for i := range devs {
		if devs[i].Type == "disk" && devs[i].SizeBytes() > 0 {
			ds = append(ds, &devs[i])
		}
	}
	return listDisks(env, ds)
}

// ramBytes is the memory size recorded by preflight, or read now when
// preflight has not run (`--only partition`).
func ramBytes(env *engine.Env) int64 {
	if env.State != nil && env.State.RAMBytes > 0 {
		return env.State.RAMBytes
	}
	ram, err := memTotal(env)
	if err != nil {
		return 0
	}
	if env.State != nil {
		env.State.RAMBytes = ram
	}
	return ram
}

func describeDisk(d *disk.Device, byID string) string {
	var parts []string
	if m := modelOf(d); m != "" {
		parts = append(parts, m)
	}
	if d.Serial != "" {
		parts = append(parts, "serial "+d.Serial)
	} else {
		parts = append(parts, "no serial number")
	}
	parts = append(parts, config.Size(d.SizeBytes()).Approx())
	if byID != "" {
		parts = append(parts, byID)
	}
	return fmt.Sprintf("%q (%s)", d.DevPath(), strings.Join(parts, ", "))
}

func listDisks(env *engine.Env, ds []*disk.Device) string {
	if len(ds) == 0 {
		return "none"
	}
	var s []string
	for _, d := range ds {
		byID, _ := preferredByID(env, d)
		s = append(s, describeDisk(d, byID))
	}
	return strings.Join(s, ", ")
}

func describeSelector(t config.Target) string {
	var s []string
	if t.Disk != "" {
		s = append(s, fmt.Sprintf("target.disk = %q", t.Disk))
	}
	if t.Serial != "" {
		s = append(s, fmt.Sprintf("target.serial = %q", t.Serial))
	}
	if len(s) == 0 {
		return "target.disk = \"auto\""
	}
	return strings.Join(s, " and ")
}

func describeSignatures(sigs []disk.Signature) string {
	var tables, fss []string
	seen := map[disk.Signature]bool{}
	for _, s := range sigs {
		if s.Type == "PMBR" {
			continue // the protective MBR of a GPT disk says nothing new
		}
		if s.IsPartitionTable() {
			if !slices.Contains(tables, s.Type) {
				tables = append(tables, s.Type)
			}
			continue
		}
		// One filesystem shows up at several offsets (FAT: 0x0, 0x52, 0x1fe).
		key := disk.Signature{Type: s.Type, Label: s.Label, UUID: s.UUID}
		if !seen[key] {
			seen[key] = true
			fss = append(fss, s.String())
		}
	}
	var out []string
	if len(tables) > 0 {
		out = append(out, "a partition table ("+strings.Join(tables, ", ")+")")
	}
	if len(fss) > 0 {
		out = append(out, "a filesystem signature ("+strings.Join(fss, "; ")+")")
	}
	if len(out) == 0 {
		return "a protective MBR"
	}
	return strings.Join(out, " and ")
}

// checkBlank applies the blank rule (disk.CheckBlank) to d, probing also at
// the planned partition starts, where an earlier install's filesystems are.
func checkBlank(ctx context.Context, env *engine.Env, d *disk.Device, plan *disk.Plan) ([]disk.Finding, error) {
	var starts []int64
	for _, p := range plan.Parts {
		starts = append(starts, p.Start*plan.SectorSize)
	}
	return disk.CheckBlank(ctx, disk.BlankProbe{
		Run: env.Run, Tools: env.Tools,
		Dev: d.DevPath(), File: env.Path(d.DevPath()),
		Size: d.SizeBytes(), SectorSize: d.SectorSize(),
		Starts: starts,
	})
}

// refuseNotBlank is the refusal of a disk that is not blank while wipe = false.
func refuseNotBlank(what, held string) error {
	return engine.WithHint(fmt.Errorf("%s: it is not blank: it holds %s, and target.wipe = false", what, held),
		"set `wipe = true` in nixpi/nixpi.toml if this disk may be erased (everything on it is lost); otherwise connect a blank disk")
}

// describeFindings lists what the blank rule found and, for a readable
// partition table, what each partition holds.
func describeFindings(ctx context.Context, env *engine.Env, d *disk.Device, table *disk.Table, found []disk.Finding) string {
	var s []string
	for _, f := range found {
		// The partition listing below says what starts at a partition.
		if table != nil && f.Offset > 0 && slices.ContainsFunc(table.Partitions, func(p disk.TablePart) bool { return p.Start*tableSectorSize(table, d) == f.Offset }) {
			continue
		}
		s = append(s, f.String())
	}
	out := strings.Join(s, "; ")
	if table != nil && len(table.Partitions) > 0 {
		out += "; " + describePartitions(ctx, env, d, table)
	}
	return out
}

// describePartitions says what each partition of table holds: type, label,
// size, used space when the filesystem's superblock tells.
func describePartitions(ctx context.Context, env *engine.Env, d *disk.Device, table *disk.Table) string {
	ss := tableSectorSize(table, d)
	var parts []string
	for i, p := range table.Partitions {
		desc := disk.DescribeRange(ctx, env.Run, env.Tools.Blkid, env.Path(d.DevPath()), d.DevPath(), p.Start*ss, p.Size*ss)
		parts = append(parts, fmt.Sprintf("%d (%s at %s): %s", i+1, config.Size(p.Size*ss).Approx(), config.Size(p.Start*ss).Approx(), desc))
	}
	n := "partitions"
	if len(parts) == 1 {
		n = "partition"
	}
	return fmt.Sprintf("%d %s: %s", len(parts), n, strings.Join(parts, "; "))
}

// tableSectorSize is the sector size table's sectors count in.
func tableSectorSize(table *disk.Table, d *disk.Device) int64 {
	if table.SectorSize > 0 {
		return table.SectorSize
	}
	return d.SectorSize()
}
