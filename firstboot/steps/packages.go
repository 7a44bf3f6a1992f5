package steps

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/network"
)

// NetworkTimeout bounds how long a step waits for the network.
const NetworkTimeout = 5 * time.Minute

// aptAttempts is how often apt-get is tried; the first try after the network
// comes up often fails on a mirror that is not reachable yet.
const aptAttempts = 3

// Tool is an external program the disk steps run, with the Debian package
// that provides it.
type Tool struct {
	Name    string // as named to people ("mkfs.btrfs")
	Path    string // from system.Tools
	Package string
}

// RequiredTools lists the programs the disk steps need for the config: the
// root filesystem's mkfs, and the tools used on every layout. Both
// partitioners are always needed: sgdisk writes every table (an MBR is
// converted from a GPT) and sfdisk reads every table back.
func RequiredTools(env *engine.Env) []Tool {
	t := env.Tools
	tools := []Tool{
		{"mkfs.fat", t.MkfsFAT, "dosfstools"},
		{"mkswap", t.Mkswap, "util-linux"},
		{"swapon", t.Swapon, "mount"},
		{"mount", t.Mount, "mount"},
		{"umount", t.Umount, "mount"},
		{"wipefs", t.Wipefs, "util-linux"},
		{"lsblk", t.Lsblk, "util-linux"},
		{"partx", t.Partx, "util-linux"},
		{"sfdisk", t.Sfdisk, "fdisk"},
		{"sgdisk", t.Sgdisk, "gdisk"},
	}
	rootFS := config.FSBtrfs
	if env.Config != nil && env.Config.Layout.RootFS != "" {
		rootFS = env.Config.Layout.RootFS
	}
	if rootFS == config.FSExt4 {
		tools = append(tools, Tool{"mkfs.ext4", t.MkfsExt4, "e2fsprogs"})
	} else {
		tools = append(tools, Tool{"mkfs.btrfs", t.MkfsBtrfs, "btrfs-progs"}, Tool{"btrfs", t.BtrfsTool, "btrfs-progs"})
	}
	return tools
}

// missingTools returns the required tools not present under the root.
func missingTools(env *engine.Env) []Tool {
	var missing []Tool
	for _, tool := range RequiredTools(env) {
		if !env.Exists(tool.Path) {
			missing = append(missing, tool)
		}
	}
	return missing
}

func describeTools(tools []Tool) string {
	var parts []string
	for _, t := range tools {
		parts = append(parts, fmt.Sprintf("%s (%s)", t.Name, t.Package))
	}
	return strings.Join(parts, ", ")
}

func packagesOf(tools []Tool) []string {
	seen := map[string]bool{}
	var pkgs []string
	for _, t := range tools {
		if !seen[t.Package] {
			seen[t.Package] = true
			pkgs = append(pkgs, t.Package)
		}
	}
	sort.Strings(pkgs)
	return pkgs
}

type packagesStep struct{}

// NewPackages installs the disk tools the image lacks with apt-get
// (Raspberry Pi OS Lite has no mkfs.btrfs). With every tool present it
// touches neither apt nor the network.
func NewPackages() engine.Step { return packagesStep{} }

func (packagesStep) Name() string    { return "packages" }
func (packagesStep) Needs() []string { return nil }
func (packagesStep) Describe() string {
	return "making sure the tools to partition and format the SSD are installed"
}

func (packagesStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	missing := missingTools(env)
	if len(missing) == 0 {
		return true, "all disk tools are installed", nil
	}
	return false, "missing " + describeTools(missing), nil
}

func (packagesStep) Run(ctx context.Context, env *engine.Env) error {
	missing := missingTools(env)
	if len(missing) == 0 {
		return nil
	}
	pkgs := packagesOf(missing)
	env.Logf("installing %s for %s", strings.Join(pkgs, " "), describeTools(missing))
	if err := network.Wait(ctx, env, NetworkTimeout); err != nil {
		return fmt.Errorf("packages: %s are needed: %w", strings.Join(pkgs, ", "), err)
	}
	// The Pi has no RTC: a clock behind the mirror's Release date must not
	// make apt refuse the lists (Debian's archive is signed, not dated).
	if err := finishInterruptedDpkg(ctx, env); err != nil {
		return err
	}
	update := []string{"update", "-o", "Acquire::Check-Valid-Until=false", "-o", "Acquire::Check-Date=false"}
	install := append([]string{"install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300"}, pkgs...)
	for _, args := range [][]string{update, install} {
		if err := aptGet(ctx, env, args); err != nil {
			return engine.WithHint(fmt.Errorf("packages: %w", err),
				"check the Pi's network and that the image's apt sources work (sudo apt-get update on the Pi)")
		}
	}
	if still := missingTools(env); len(still) > 0 {
		return fmt.Errorf("packages: apt-get installed %s but %s are still missing", strings.Join(pkgs, " "), describeTools(still))
	}
	return nil
}

// dpkgUpdatesDir holds dpkg's journal of a run that has not finished; apt-get
// refuses to do anything while it has entries.
const dpkgUpdatesDir = "/var/lib/dpkg/updates"

// finishInterruptedDpkg completes what a power cut during an earlier
// apt-get left half done (this step redone from its start), as apt-get
// itself asks: "dpkg was interrupted, you must manually run 'dpkg
// --configure -a'".
func finishInterruptedDpkg(ctx context.Context, env *engine.Env) error {
	entries, err := os.ReadDir(env.Path(dpkgUpdatesDir))
	if err != nil || len(entries) == 0 {
		return nil
	}
	env.Logf("an earlier package install was interrupted: finishing it")
	if _, err := env.Run.Output(ctx, env.Tools.Env, "DEBIAN_FRONTEND=noninteractive", env.Tools.Dpkg, "--configure", "-a"); err != nil {
		return engine.WithHint(fmt.Errorf("packages: finish the interrupted package install: %w", err),
			"on the Pi, run sudo dpkg --configure -a and read its errors")
	}
	return nil
}

func aptGet(ctx context.Context, env *engine.Env, args []string) error {
	argv := append([]string{env.Tools.Env, "DEBIAN_FRONTEND=noninteractive", env.Tools.AptGet}, args...)
	wait := 10 * time.Second
	var err error
	for attempt := 1; attempt <= aptAttempts; attempt++ {
		if _, err = env.Run.Output(ctx, argv...); err == nil || ctx.Err() != nil {
			return err
		}
		if attempt < aptAttempts {
			env.Logf("apt-get %s failed (attempt %d of %d), retrying in %s", args[0], attempt, aptAttempts, wait)
			if werr := env.Wait(ctx, wait); werr != nil {
				return werr
			}
			wait *= 2
		}
	}
	return err
}
