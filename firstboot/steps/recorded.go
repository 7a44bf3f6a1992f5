// The disk the target step recorded, found again on a later boot: every
// step after target works on it, and refuses a disk that is not it.

package steps

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
)

// recordedDisk finds, on this boot, the disk the target step recorded, and
// refuses when its identity (size, serial, by-id) no longer matches.
func recordedDisk(ctx context.Context, env *engine.Env) (*disk.Device, error) {
	if env.State == nil || env.State.Target == nil {
		return nil, errors.New("no target disk recorded: the target step has not run")
	}
	rec := env.State.Target
	for attempt := 1; ; attempt++ {
		d, err := findRecorded(ctx, env)
		if err != nil || d != nil {
			return d, err
		}
		if attempt > diskWaitTries {
			return nil, engine.WithHint(fmt.Errorf("the journal records an installation onto disk %s, which is not connected (disks attached now: %s)",
				describeRecord(rec), attachedDisks(ctx, env)), otherDiskHint(rec, ""))
		}
		if attempt == 1 {
			env.Logf("waiting up to %s for the target disk %s", diskWaitTries*diskWaitEvery, describeRecord(rec))
		}
		if err := env.Wait(ctx, diskWaitEvery); err != nil {
			return nil, err
		}
	}
}

// findRecorded is recordedDisk's one look: nil when the disk is not there.
func findRecorded(ctx context.Context, env *engine.Env) (*disk.Device, error) {
	rec := env.State.Target
	devs, err := disk.List(ctx, env.Run, env.Tools.Lsblk)
	if err != nil {
		return nil, err
	}
	var d *disk.Device
	switch {
	case env.TargetOverride != "":
		path, err := disk.ResolveDevLink(env.Root, env.TargetOverride)
		if err != nil {
			return nil, fmt.Errorf("--target %q: %w", env.TargetOverride, err)
		}
		d = topLevel(devs, path)
	case rec.ByID != "":
		if path, err := disk.ResolveDevLink(env.Root, rec.ByID); err == nil {
			d = topLevel(devs, path)
		}
	case rec.Serial != "":
		for i := range devs {
			if devs[i].Serial == rec.Serial {
				d = &devs[i]
			}
		}
	default:
		d = topLevel(devs, rec.Dev)
	}
	if d == nil {
		return nil, nil
	}
	byID, err := preferredByID(env, d)
	if err != nil {
		return nil, err
	}
	got := identityOf(d, byID)
	var why string
	switch {
	case got.Size != rec.Size:
		why = "its size differs"
	case got.Serial != rec.Serial:
		why = "its serial number differs"
	case rec.ByID != "" && !strings.EqualFold(got.ByID, rec.ByID) && !hasLink(env, d, rec.ByID):
		why = "its /dev/disk/by-id name differs"
	case rec.Model != "" && modelOf(d) != rec.Model:
		why = "its model differs"
	case rec.Serial == "":
		// Without a serial number, size, name and model fit any disk of a
		// kind: what is on it must fit too.
		if why, err = notRecordedContent(ctx, env, d, rec); err != nil {
			return nil, err
		}
	}
	if why != "" {
		return nil, engine.WithHint(fmt.Errorf("the journal records an installation onto disk %s, but the disk attached now, %s, is another disk: %s",
			describeRecord(rec), describeDisk(d, byID), why), otherDiskHint(rec, d.DevPath()))
	}
	return d, nil
}

// notRecordedContent says why what is on d shows that d is not the recorded
// disk (which has no serial number), or "": a partition table that is
// neither this installation's nor the one the disk carried when chosen, or
// no table on a disk this installation has partitioned.
func notRecordedContent(ctx context.Context, env *engine.Env, d *disk.Device, rec *journal.Disk) (string, error) {
	table, _, err := disk.ReadTable(ctx, env.Run, env.Tools, d.DevPath())
	if err != nil {
		return "", err
	}
	plan, err := disk.NewPlan(env.Config.Layout, ramBytes(env), disk.RecordedIdentity(rec), d.SectorSize())
	if err != nil {
		return "", fmt.Errorf("plan the layout of %q: %w", d.DevPath(), err)
	}
	switch {
	case table != nil && !plan.IsOurs(table, rec.GPTGUID) && !(rec.FoundID != "" && strings.EqualFold(table.ID, rec.FoundID)):
		return fmt.Sprintf("it carries a partition table with disk id %s, this installation's has %s", table.ID, rec.GPTGUID), nil
	case table == nil && rec.Partitioned:
		return fmt.Sprintf("it carries no partition table, and this installation partitioned its disk (disk id %s)", rec.GPTGUID), nil
	}
	return "", nil
}

// otherDiskHint is the two ways on when the recorded disk is not the one
// attached (at dev, or "" when none is).
func otherDiskHint(rec *journal.Disk, dev string) string {
	other := "another disk"
	if dev != "" {
		other = fmt.Sprintf("%q", dev)
	}
	return fmt.Sprintf("either connect the disk %s again and start again, or delete %s on the SD card to start over onto %s (the journal's progress is lost; with wipe = true everything on that disk is erased)",
		describeRecord(rec), cardpath.Journal, other)
}

// selectionChanged says whether the config or --target now asks for a disk
// other than the recorded one: then the target step chooses again.
func selectionChanged(env *engine.Env, rec *journal.Disk) bool {
	if env.TargetOverride != "" {
		dev, err := disk.ResolveDevLink(env.Root, env.TargetOverride)
		return err != nil || dev != rec.Dev
	}
	cfg := env.Config.Target
	if cfg.Serial != "" && cfg.Serial != rec.Serial {
		return true
	}
	if strings.HasPrefix(cfg.Disk, config.DiskByID) && cfg.Disk != rec.ByID {
		// Another name of the same disk (wwn- for usb-) is no change, nor
		// is a name that leads nowhere now: the recorded disk is missing.
		dev, err := disk.ResolveDevLink(env.Root, cfg.Disk)
		return err == nil && dev != rec.Dev
	}
	return false
}

func describeRecord(r *journal.Disk) string {
	var parts []string
	if r.Model != "" {
		parts = append(parts, r.Model)
	}
	if r.Serial != "" {
		parts = append(parts, "serial "+r.Serial)
	} else {
		parts = append(parts, "no serial number")
	}
	parts = append(parts, config.Size(r.Size).Approx())
	if r.ByID != "" {
		parts = append(parts, r.ByID)
	}
	return fmt.Sprintf("%q (%s)", r.Dev, strings.Join(parts, ", "))
}

// planFor is the layout plan for the recorded target disk.
func planFor(env *engine.Env, d *disk.Device) (*disk.Plan, error) {
	return disk.NewPlan(env.Config.Layout, ramBytes(env), disk.RecordedIdentity(env.State.Target), d.SectorSize())
}

// diskAndPlan finds the recorded target disk on this boot and plans its layout.
func diskAndPlan(ctx context.Context, env *engine.Env) (*disk.Device, *disk.Plan, error) {
	d, err := recordedDisk(ctx, env)
	if err != nil {
		return nil, nil, err
	}
	plan, err := planFor(env, d)
	if err != nil {
		return nil, nil, fmt.Errorf("plan the layout of %q: %w", d.DevPath(), err)
	}
	return d, plan, nil
}

// partitionedDisk is the recorded target disk, its plan and the verified
// nodes of its partitions, refusing when the table on it is not the planned
// one (the partition step comes first).
func partitionedDisk(ctx context.Context, env *engine.Env) (*disk.Device, *disk.Plan, map[int]string, error) {
	d, plan, err := diskAndPlan(ctx, env)
	if err != nil {
		return nil, nil, nil, err
	}
	table, _, err := disk.ReadTable(ctx, env.Run, env.Tools, d.DevPath())
	if err != nil {
		return nil, nil, nil, err
	}
	if diff := plan.Compare(table); diff != "" {
		return nil, nil, nil, engine.WithHint(fmt.Errorf("the partition table on %q is not the planned one: %s", d.DevPath(), diff),
			"run the partition step first")
	}
	nodes, err := partitionNodes(env, d.DevPath(), plan)
	if err != nil {
		return nil, nil, nil, err
	}
	return d, plan, nodes, nil
}
