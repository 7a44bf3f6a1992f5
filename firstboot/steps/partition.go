package steps

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/engine"
)

// partitionStep writes the planned table onto the recorded target disk: GPT
// (EF00 boot, 8200 swap, 8300 root) by default, MBR on request, with every
// GUID derived from the config and the disk's identity.
type partitionStep struct{}

// NewPartition returns the step that partitions the target disk.
func NewPartition() engine.Step { return partitionStep{} }

func (partitionStep) Name() string    { return "partition" }
func (partitionStep) Needs() []string { return []string{"target"} }
func (partitionStep) Describe() string {
	return "partition the target disk: boot (FAT32), swap, root"
}

func (partitionStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	if env.State == nil || env.State.Target == nil {
		return false, "no target disk chosen yet", nil
	}
	d, plan, err := diskAndPlan(ctx, env)
	if err != nil {
		return false, "", err
	}
	table, _, err := disk.ReadTable(ctx, env.Run, env.Tools, d.DevPath())
	if err != nil {
		return false, "", err
	}
	if diff := plan.Compare(table); diff != "" {
		return false, fmt.Sprintf("%q: %s", d.DevPath(), diff), nil
	}
	if why := missingPartitionNode(env, d.DevPath(), plan); why != "" {
		return false, why, nil
	}
	return true, fmt.Sprintf("%q already partitioned as planned (%s, disk id %s)", d.DevPath(), plan.Table, plan.DiskID), nil
}

func (partitionStep) Run(ctx context.Context, env *engine.Env) error {
	d, plan, err := diskAndPlan(ctx, env)
	if err != nil {
		return err
	}
	dev := d.DevPath()
	table, _, err := disk.ReadTable(ctx, env.Run, env.Tools, dev)
	if err != nil {
		return err
	}
	if plan.Compare(table) == "" {
		env.State.Target.Partitioned = true
		env.Logf("%q already partitioned as planned, skipping", dev)
		if missingPartitionNode(env, dev, plan) != "" {
			if _, err := env.Run.Output(ctx, env.Tools.Partx, "--update", dev); err != nil {
				return fmt.Errorf("tell the kernel about the partitions on %q: %w", dev, err)
			}
		}
		return waitForPartitions(ctx, env, dev, plan)
	}
	// A complete table of this installation whose id is not the plan's means
	// the plan's inputs changed since (layout config, or the memory size
	// swap_size = "ram" follows): repartitioning would destroy the work on it.
	if rec := env.State.Target.GPTGUID; table != nil && rec != "" && strings.EqualFold(table.ID, rec) && !strings.EqualFold(rec, plan.DiskID) {
		return engine.WithHint(fmt.Errorf("refusing to repartition %q: it carries this installation's table (disk id %s), but the layout planned now is another (%s): the [layout] config or the memory size changed since it was partitioned",
			dev, table.ID, describePlan(plan)),
			"undo the [layout] change in nixpi/nixpi.toml; to start over on this disk on purpose, remove nixpi/journal.jsonl from the SD card and set target.wipe = true")
	}
	if err := checkNotInUse(env, d); err != nil {
		return err
	}
	// The target step refused a disk that was not blank unless wipe was
	// allowed; this second look catches a disk changed since, before
	// anything is erased.
	if !plan.IsOurs(table, env.State.Target.GPTGUID) && !env.Config.Target.Wipe {
		found, err := checkBlank(ctx, env, d, plan)
		if err != nil {
			return err
		}
		if len(found) > 0 {
			return refuseNotBlank(fmt.Sprintf("refusing to partition %q", dev), describeFindings(ctx, env, d, table, found)+" that this installation did not write")
		}
	}
	// Record the disk id about to be written, so a resume after a power cut
	// recognises the table as this installation's.
	env.State.Target.GPTGUID = plan.DiskID
	env.Logf("partitioning %q: %s", dev, describePlan(plan))

	if _, err := env.Run.Output(ctx, env.Tools.Wipefs, "--all", dev); err != nil {
		return fmt.Errorf("erase the old signatures on %q: %w", dev, err)
	}
	env.Crash("partition:wiped")
	// Both tables start as GPT, written in one sgdisk call; MBR is converted
	// from it, so the geometry is the same for both.
	if _, err := env.Run.Output(ctx, sgdiskArgv(env, plan, dev)...); err != nil {
		return fmt.Errorf("write the partition table on %q: %w", dev, err)
	}
	env.Crash("partition:gpt-written")
	if plan.Table == config.TableMBR {
		if err := convertToMBR(ctx, env, plan, dev); err != nil {
			return err
		}
	}
	if _, err := env.Run.Output(ctx, env.Tools.Partx, "--update", dev); err != nil {
		return fmt.Errorf("tell the kernel about the new partitions on %q: %w", dev, err)
	}
	env.Crash("partition:kernel-updated")

	got, _, err := disk.ReadTable(ctx, env.Run, env.Tools, dev)
	if err != nil {
		return err
	}
	if diff := plan.Compare(got); diff != "" {
		return fmt.Errorf("partition table on %q read back differs from the plan: %s", dev, diff)
	}
	env.State.Target.Partitioned = true
	return waitForPartitions(ctx, env, dev, plan)
}

func sgdiskArgv(env *engine.Env, plan *disk.Plan, dev string) []string {
	argv := []string{env.Tools.Sgdisk, "--clear", "--disk-guid=" + plan.GPTGUID}
	for _, p := range plan.Parts {
		n := strconv.Itoa(p.Number)
		argv = append(argv,
			fmt.Sprintf("--new=%s:%d:%d", n, p.Start, p.Start+p.Sectors-1),
			"--typecode="+n+":"+p.SgdiskType)
		if plan.Table == config.TableGPT {
			argv = append(argv, "--partition-guid="+n+":"+p.GUID, "--change-name="+n+":"+p.Name)
		}
	}
	return append(argv, dev)
}

// convertToMBR turns the fresh GPT into an MBR with the same geometry, then
// sets the derived disk identifier and the FAT32 (LBA) type the Pi's
// bootloader reads.
func convertToMBR(ctx context.Context, env *engine.Env, plan *disk.Plan, dev string) error {
	nums := make([]string, len(plan.Parts))
	for i, p := range plan.Parts {
		nums[i] = strconv.Itoa(p.Number)
	}
	if _, err := env.Run.Output(ctx, env.Tools.Sgdisk, "--gpttombr="+strings.Join(nums, ":"), dev); err != nil {
		return fmt.Errorf("convert the partition table on %q to MBR: %w", dev, err)
	}
	env.Crash("partition:mbr-converted")
	if _, err := env.Run.Output(ctx, env.Tools.Sfdisk, "--disk-id", dev, plan.DiskID); err != nil {
		return fmt.Errorf("set the disk identifier of %q: %w", dev, err)
	}
	env.Crash("partition:mbr-disk-id")
	for _, p := range plan.Parts {
		if p.Role == disk.RoleBoot {
			if _, err := env.Run.Output(ctx, env.Tools.Sfdisk, "--part-type", dev, strconv.Itoa(p.Number), p.MBRType); err != nil {
				return fmt.Errorf("set the type of partition %d on %q: %w", p.Number, dev, err)
			}
		}
	}
	return nil
}

// waitForPartitions waits (bounded) until the kernel shows every planned
// partition, since later steps run tools on them; a path that is not the
// kernel's node for it is refused at once.
func waitForPartitions(ctx context.Context, env *engine.Env, dev string, plan *disk.Plan) error {
	const tries, every = 50, 200 * time.Millisecond
	for i := 0; ; i++ {
		_, err := partitionNodes(env, dev, plan)
		if !errors.Is(err, disk.ErrNoPartition) {
			return err
		}
		if i == tries {
			return engine.WithHint(fmt.Errorf("%w (waited %s)", err, time.Duration(tries)*every),
				"the disk or its USB bridge may be failing; reconnect it and start again")
		}
		if err := env.Wait(ctx, every); err != nil {
			return err
		}
	}
}

// partitionNodes are the /dev nodes of the planned partitions by number,
// each verified to be the block device the kernel made for it (sysfs): a
// tool is never pointed at a path that merely exists.
func partitionNodes(env *engine.Env, dev string, plan *disk.Plan) (map[int]string, error) {
	nodes := map[int]string{}
	for _, p := range plan.Parts {
		node, err := disk.PartitionDevice(env.Root, dev, p.Number)
		if errors.Is(err, disk.ErrNoPartition) {
			return nil, err
		}
		if err != nil && node == "" {
			return nil, err // sysfs unreadable
		}
		if err != nil {
			return nil, engine.WithHint(fmt.Errorf("refusing to use partition %d of %q: %w", p.Number, dev, err),
				fmt.Sprintf("something other than the kernel put %q there; remove it, reconnect the disk and start again", node))
		}
		nodes[p.Number] = node
	}
	return nodes, nil
}

// missingPartitionNode says why the planned partitions cannot be used yet
// (the kernel has not read the new table, or a node is wrong), or "".
func missingPartitionNode(env *engine.Env, dev string, plan *disk.Plan) string {
	if _, err := partitionNodes(env, dev, plan); err != nil {
		return err.Error()
	}
	return ""
}

func describePlan(plan *disk.Plan) string {
	var parts []string
	for _, p := range plan.Parts {
		parts = append(parts, fmt.Sprintf("%d: %s %d MiB %s", p.Number, p.Role, p.Sectors*plan.SectorSize>>20, p.FSType))
	}
	return fmt.Sprintf("%s, %s", plan.Table, strings.Join(parts, ", "))
}
