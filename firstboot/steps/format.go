package steps

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/engine"
)

// formatStep makes the filesystems: FAT32 boot with a volume id fixed from the
// config, swap, and a btrfs (or ext4) root with its subvolumes. A filesystem
// already there with the planned type, label and UUID is kept.
type formatStep struct{}

// NewFormat returns the step that makes the filesystems.
func NewFormat() engine.Step { return formatStep{} }

// btrfsTopDir is where the format step mounts the btrfs top level to create
// subvolumes (under Root).
const btrfsTopDir = "/run/nixpi/btrfs-top"

func (formatStep) Name() string    { return "format" }
func (formatStep) Needs() []string { return []string{"partition", "packages"} }
func (formatStep) Describe() string {
	return "make the filesystems: FAT32 boot, swap, root (with btrfs subvolumes)"
}

func (formatStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	d, plan, nodes, err := partitionedDisk(ctx, env)
	if err != nil {
		return false, err.Error(), nil
	}
	for _, p := range plan.Parts {
		node := nodes[p.Number]
		sigs, err := disk.Signatures(ctx, env.Run, env.Tools.Wipefs, node)
		if err != nil {
			return false, "", err
		}
		if !isPlannedFS(sigs, p) {
			return false, fmt.Sprintf("%q does not hold the planned %s filesystem %q", node, p.FSType, p.Label), nil
		}
	}
	if missing, err := missingSubvolumes(ctx, env, nodes, plan); err != nil {
		return false, "", err
	} else if len(missing) > 0 {
		return false, fmt.Sprintf("btrfs subvolumes missing: %s", strings.Join(missing, ", ")), nil
	}
	return true, fmt.Sprintf("filesystems on %q already made as planned", d.DevPath()), nil
}

func (formatStep) Run(ctx context.Context, env *engine.Env) error {
	_, plan, nodes, err := partitionedDisk(ctx, env)
	if err != nil {
		return err
	}
	for _, p := range plan.Parts {
		node := nodes[p.Number]
		sigs, err := disk.Signatures(ctx, env.Run, env.Tools.Wipefs, node)
		if err != nil {
			return err
		}
		planned := isPlannedFS(sigs, p)
		switch {
		case planned && env.Redo && p.FSType == "vfat":
			// mkfs.fat writes the boot sector (label, volume id) before the
			// FATs and the root directory, so a power cut inside it can leave
			// the planned signature on a broken filesystem. Nothing but mkfs
			// has written to it before this step is done: make it again.
			env.Logf("%q: this step was interrupted; making the %s filesystem %q again, since it may be half made", node, p.FSType, p.Label)
		case planned:
			env.Logf("%q: already formatted (%s, label %q, uuid %s), skipping", node, p.FSType, p.Label, p.FSUUID)
			continue
		case len(sigs) > 0:
			// The partition is this installation's, but what is in it is not:
			// left over from the disk's earlier life. Erase it only if allowed.
			if !env.Config.Target.Wipe {
				return engine.WithHint(fmt.Errorf("refusing to format %q: it holds %s that this installation did not make, and target.wipe = false", node, describeSignatures(sigs)),
					"if everything on this disk may be erased, set wipe = true in the [target] section of nixpi/nixpi.toml")
			}
			if _, err := env.Run.Output(ctx, env.Tools.Wipefs, "--all", node); err != nil {
				return fmt.Errorf("erase the old signatures on %q: %w", node, err)
			}
		}
		env.Logf("%q: making %s filesystem %q", node, p.FSType, p.Label)
		if _, err := env.Run.Output(ctx, mkfsArgv(env, plan, p, node)...); err != nil {
			return fmt.Errorf("make the %s filesystem on %q: %w", p.FSType, node, err)
		}
		env.Crash("format:" + p.Role)
	}
	return createSubvolumes(ctx, env, nodes, plan)
}

func mkfsArgv(env *engine.Env, plan *disk.Plan, p disk.Part, node string) []string {
	switch p.FSType {
	case "vfat":
		return []string{env.Tools.MkfsFAT, "-F", "32", "-n", p.Label, "-i", plan.FATVolumeID, node}
	case "swap":
		return []string{env.Tools.Mkswap, "-L", p.Label, "-U", p.FSUUID, node}
	case config.FSExt4:
		return []string{env.Tools.MkfsExt4, "-F", "-L", p.Label, "-U", p.FSUUID, node}
	default:
		return []string{env.Tools.MkfsBtrfs, "-f", "-L", p.Label, "-U", p.FSUUID, node}
	}
}

// isPlannedFS: every signature is the planned filesystem's, with the planned
// label and UUID (wipefs reports FAT at several offsets of one boot sector).
func isPlannedFS(sigs []disk.Signature, p disk.Part) bool {
	for _, s := range sigs {
		if s.Type != p.FSType || s.Label != p.Label || !strings.EqualFold(s.UUID, p.FSUUID) {
			return false
		}
	}
	return len(sigs) > 0
}

func missingSubvolumes(ctx context.Context, env *engine.Env, nodes map[int]string, plan *disk.Plan) ([]string, error) {
	root := plan.Part(disk.RoleRoot)
	if root.FSType != config.FSBtrfs || len(plan.Subvolumes) == 0 {
		return nil, nil
	}
	have, err := disk.Subvolumes(ctx, env.Run, env.Tools.BtrfsTool, nodes[root.Number])
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, s := range plan.Subvolumes {
		if !slices.Contains(have, s) {
			missing = append(missing, s)
		}
	}
	return missing, nil
}

// createSubvolumes mounts the btrfs top level at a private directory, makes
// the missing subvolumes and unmounts it.
func createSubvolumes(ctx context.Context, env *engine.Env, nodes map[int]string, plan *disk.Plan) error {
	missing, err := missingSubvolumes(ctx, env, nodes, plan)
	if err != nil || len(missing) == 0 {
		if err == nil && len(plan.Subvolumes) > 0 {
			env.Logf("btrfs subvolumes %s already there, skipping", strings.Join(plan.Subvolumes, ", "))
		}
		return err
	}
	node := nodes[plan.Part(disk.RoleRoot).Number]
	dir := env.Path(btrfsTopDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create the btrfs work directory: %w", err)
	}
	mounts, err := disk.ReadMountInfo(env.Root)
	if err != nil {
		return err
	}
	// A service killed mid-step (not a reboot) leaves its mount behind.
	if disk.MountAt(mounts, dir) != nil {
		if _, err := env.Run.Output(ctx, env.Tools.Umount, dir); err != nil {
			return fmt.Errorf("unmount the leftover %q: %w", dir, err)
		}
	}
	if _, err := env.Run.Output(ctx, env.Tools.Mount, "-t", "btrfs", "-o", "subvolid=5", node, dir); err != nil {
		return fmt.Errorf("mount the btrfs top level of %q: %w", node, err)
	}
	env.Crash("format:btrfs-mounted")
	for _, s := range missing {
		env.Logf("%q: creating btrfs subvolume %s", node, s)
		if _, err := env.Run.Output(ctx, env.Tools.BtrfsTool, "subvolume", "create", filepath.Join(dir, s)); err != nil {
			_, _ = env.Run.Output(ctx, env.Tools.Umount, dir)
			return fmt.Errorf("create btrfs subvolume %s on %q: %w", s, node, err)
		}
		env.Crash("format:subvolume-" + s)
	}
	if _, err := env.Run.Output(ctx, env.Tools.Umount, dir); err != nil {
		return fmt.Errorf("unmount %q: %w", dir, err)
	}
	return nil
}
