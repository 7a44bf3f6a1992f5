package steps

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nixpi/nixpi/firstboot/blockdev"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/engine"
)

// mountStep mounts the new system at /mnt as the original recipe does (root,
// /mnt/boot, and for btrfs /mnt/nix and /mnt/home from subvolumes) and turns
// the swap on, so the install (and nixos-generate-config) sees it all.
type mountStep struct{}

// NewMount returns the step that mounts the new system at /mnt.
func NewMount() engine.Step { return mountStep{} }

// installRoot is where the new system is mounted (under Root).
const installRoot = "/mnt"

func (mountStep) Name() string    { return "mount" }
func (mountStep) Needs() []string { return []string{"format"} }
func (mountStep) Describe() string {
	return "mount the new system at /mnt and turn its swap on"
}

// plannedMount is one mount the step makes.
type plannedMount struct {
	Source string // partition node
	Target string // device path ("/mnt/nix"), mapped under Root when used
	FSType string
	Subvol string // btrfs subvolume, "" for the top level or other filesystems
}

func (m plannedMount) argv(env *engine.Env) []string {
	argv := []string{env.Tools.Mount, "-t", m.FSType}
	if m.Subvol != "" {
		argv = append(argv, "-o", "subvol="+m.Subvol)
	}
	return append(argv, m.Source, env.Path(m.Target))
}

// matches says whether a mountinfo entry is this mount.
func (m plannedMount) matches(got *disk.Mount) bool {
	root := "/"
	if m.Subvol != "" {
		root = "/" + m.Subvol
	}
	return got.Source == m.Source && got.FSType == m.FSType && (m.FSType != config.FSBtrfs || got.Root == root)
}

// mountPlan lists the mounts in order: root, the other btrfs subvolumes,
// then boot last, since only the FAT mount needs a driver besides the root's.
func mountPlan(env *engine.Env, nodes map[int]string, plan *disk.Plan) (mounts []plannedMount, swap string) {
	root := plan.Part(disk.RoleRoot)
	rootNode := nodes[root.Number]
	layout := disk.EffectiveLayout(env.Config.Layout)
	rootMount := plannedMount{Source: rootNode, Target: installRoot, FSType: root.FSType}
	var subvols []plannedMount
	if root.FSType == config.FSBtrfs {
		for _, sm := range layout.SubvolumeMounts() {
			if sm.Subvolume == config.RootSubvol {
				rootMount.Subvol = sm.Subvolume
				continue
			}
			subvols = append(subvols, plannedMount{Source: rootNode, Target: filepath.Join(installRoot, sm.Path), FSType: config.FSBtrfs, Subvol: sm.Subvolume})
		}
	}
	mounts = append([]plannedMount{rootMount}, subvols...)
	boot := plan.Part(disk.RoleBoot)
	mounts = append(mounts, plannedMount{Source: nodes[boot.Number], Target: filepath.Join(installRoot, "boot"), FSType: "vfat"})
	if s := plan.Part(disk.RoleSwap); s != nil {
		swap = nodes[s.Number]
	}
	return mounts, swap
}

func (mountStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	_, plan, nodes, err := partitionedDisk(ctx, env)
	if err != nil {
		return false, err.Error(), nil
	}
	planned, swap := mountPlan(env, nodes, plan)
	mounts, err := disk.ReadMountInfo(env.Root)
	if err != nil {
		return false, "", err
	}
	for _, m := range planned {
		got := disk.MountAt(mounts, env.Path(m.Target))
		if got == nil || !m.matches(got) {
			return false, fmt.Sprintf("%s is not mounted at %s", m.Source, m.Target), nil
		}
	}
	if swap != "" {
		swaps, err := blockdev.ReadSwaps(env.Root)
		if err != nil {
			return false, "", err
		}
		if !slices.Contains(swaps, swap) {
			return false, fmt.Sprintf("swap %s is off", swap), nil
		}
	}
	return true, fmt.Sprintf("new system already mounted at %s", installRoot), nil
}

func (mountStep) Run(ctx context.Context, env *engine.Env) error {
	_, plan, nodes, err := partitionedDisk(ctx, env)
	if err != nil {
		return err
	}
	planned, swap := mountPlan(env, nodes, plan)
	for i, m := range planned {
		if i == len(planned)-1 && swap != "" {
			// Swap goes on before the boot mount, right after the root
			// filesystem's mounts.
			if err := swapOn(ctx, env, swap); err != nil {
				return err
			}
		}
		if err := mountOne(ctx, env, m); err != nil {
			return err
		}
	}
	return nil
}

func mountOne(ctx context.Context, env *engine.Env, m plannedMount) error {
	target := env.Path(m.Target)
	mounts, err := disk.ReadMountInfo(env.Root)
	if err != nil {
		return err
	}
	if got := disk.MountAt(mounts, target); got != nil {
		if m.matches(got) {
			env.Logf("%s already mounted at %s, skipping", m.Source, m.Target)
			return nil
		}
		return engine.WithHint(fmt.Errorf("%q is already mounted from %q (%s, %s), not from %q", target, got.Source, got.FSType, got.Root, m.Source),
			fmt.Sprintf("unmount %s (umount -R %s) and start again", m.Target, target))
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("create mount point %q: %w", target, err)
	}
	if m.FSType == "vfat" {
		if err := repairFAT(ctx, env, m.Source); err != nil {
			return err
		}
	}
	env.Logf("mounting %s at %s", describeMount(m), m.Target)
	if _, err := env.Run.Output(ctx, m.argv(env)...); err != nil {
		err = fmt.Errorf("mount %s at %q: %w", m.Source, target, err)
		if m.FSType == "vfat" && !kernelHasFS(env, "vfat") {
			return engine.WithHint(err, "this kernel lists no vfat driver in /proc/filesystems; load it (modprobe vfat) or use a kernel with FAT support")
		}
		return err
	}
	env.Crash("mount:" + strings.TrimPrefix(m.Target, "/"))
	return nil
}

// repairFAT runs fsck.fat -a on the boot filesystem before it is mounted.
// A power cut while it was mounted leaves its dirty bit set (and maybe a
// half-written cluster chain); Linux mounts it anyway and keeps the bit at
// unmount, so without this the SSD the Pi will boot from keeps a FAT that
// every check calls unclean. btrfs and ext4 replay their own logs.
func repairFAT(ctx context.Context, env *engine.Env, node string) error {
	out, err := env.Run.Output(ctx, env.Tools.FsckFAT, "-a", "-w", node)
	var coded interface{ ExitCode() int }
	switch {
	case err == nil:
		return nil
	case errors.As(err, &coded) && coded.ExitCode() == 1:
		// 1: errors were found and, with -a, repaired.
		env.Logf("the boot filesystem %s was not cleanly unmounted (a power cut?); fsck.fat repaired it: %s", node, strings.TrimSpace(string(out)))
		return nil
	}
	return engine.WithHint(fmt.Errorf("check the boot filesystem %q before mounting it: %w", node, err),
		"the SSD's FAT is damaged beyond what fsck.fat -a repairs; set `wipe = true` in nixpi/nixpi.toml to make the disk again, or repair it on another computer")
}

func swapOn(ctx context.Context, env *engine.Env, node string) error {
	swaps, err := blockdev.ReadSwaps(env.Root)
	if err != nil {
		return err
	}
	if slices.Contains(swaps, node) {
		env.Logf("swap %s already on, skipping", node)
		return nil
	}
	env.Logf("turning swap on: %s", node)
	if _, err := env.Run.Output(ctx, env.Tools.Swapon, node); err != nil {
		return fmt.Errorf("turn swap on at %q: %w", node, err)
	}
	env.Crash("mount:swap")
	return nil
}

// kernelHasFS reports whether /proc/filesystems (under Root) lists fstype.
func kernelHasFS(env *engine.Env, fstype string) bool {
	data, err := os.ReadFile(env.Path("/proc/filesystems"))
	if err != nil {
		return true // unknown: do not blame the kernel
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == fstype {
			return true
		}
	}
	return false
}

func describeMount(m plannedMount) string {
	if m.Subvol != "" {
		return fmt.Sprintf("%s (%s subvolume %s)", m.Source, m.FSType, m.Subvol)
	}
	return fmt.Sprintf("%s (%s)", m.Source, m.FSType)
}
