package steps

import (
	"context"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/system/systemtest"
)

// installTools puts every required tool under the root except the named ones.
func installTools(t *testing.T, p *piEnv, except ...string) {
	t.Helper()
	skip := map[string]bool{}
	for _, e := range except {
		skip[e] = true
	}
	for _, tool := range RequiredTools(p.Env) {
		if !skip[tool.Name] {
			p.put(t, tool.Path, "")
		}
	}
}

func TestPackagesPresentSkipsWithoutNetwork(t *testing.T) {
	t.Parallel()
	p := newPiEnv(t)
	installTools(t, p)
	step := NewPackages()
	done, why, err := step.Probe(context.Background(), p.Env)
	if !done || err != nil || why != "all disk tools are installed" {
		t.Fatalf("Probe = %v, %q, %v", done, why, err)
	}
	if err := step.Run(context.Background(), p.Env); err != nil {
		t.Fatal(err)
	}
	if calls := p.run.Calls(); len(calls) != 0 {
		t.Errorf("commands run with every tool present: %v", calls)
	}
}

func TestPackagesInstallsMissingTools(t *testing.T) {
	t.Parallel()
	p := newPiEnv(t)
	installTools(t, p, "mkfs.btrfs", "btrfs", "sgdisk") // Raspberry Pi OS Lite
	p.networkUp(t)
	step := NewPackages()
	done, why, _ := step.Probe(context.Background(), p.Env)
	if done || why != "missing sgdisk (gdisk), mkfs.btrfs (btrfs-progs), btrfs (btrfs-progs)" {
		t.Fatalf("Probe = %v, %q", done, why)
	}
	apt := []string{p.Tools.Env, "DEBIAN_FRONTEND=noninteractive", p.Tools.AptGet}
	p.run.On("", append(apt, "update")...)
	// The first install attempt fails (a mirror not reachable yet).
	p.run.Fail(100, "E: Failed to fetch http://deb.debian.org/...", append(apt, "install")...).Times = 1
	p.run.On("", append(apt, "install")...)
	installs := 0
	p.run.OnRun = func(argv []string) {
		if argv[3] == "install" {
			installs++
		}
		if installs == 2 {
			// The second attempt really installs.
			p.put(t, p.Tools.MkfsBtrfs, "")
			p.put(t, p.Tools.BtrfsTool, "")
			p.put(t, p.Tools.Sgdisk, "")
		}
	}
	if err := step.Run(context.Background(), p.Env); err != nil {
		t.Fatalf("Run: %v\n%s", err, p.log())
	}
	systemtest.Golden(t, "packages-install.argv", p.run.Transcript())
	if done, _, _ := step.Probe(context.Background(), p.Env); !done {
		t.Error("tools still missing after Run")
	}
	if !strings.Contains(p.log(), "apt-get install failed (attempt 1 of 3), retrying in 10s") {
		t.Errorf("log:\n%s", p.log())
	}
}

func TestPackagesWithoutNetworkFailsWithHint(t *testing.T) {
	t.Parallel()
	p := newPiEnv(t)
	installTools(t, p, "mkfs.btrfs")
	err := NewPackages().Run(context.Background(), p.Env)
	if err == nil || !strings.Contains(err.Error(), "packages: btrfs-progs are needed: no network after 5m0s") {
		t.Fatalf("Run = %v", err)
	}
	if len(p.run.Calls()) != 0 {
		t.Errorf("apt-get ran without network: %v", p.run.Calls())
	}
}

func TestPackagesStillMissingAfterInstall(t *testing.T) {
	t.Parallel()
	p := newPiEnv(t)
	installTools(t, p, "mkfs.btrfs")
	p.networkUp(t)
	p.run.On("", p.Tools.Env)
	err := NewPackages().Run(context.Background(), p.Env)
	if err == nil || !strings.Contains(err.Error(), "apt-get installed btrfs-progs but mkfs.btrfs (btrfs-progs) are still missing") {
		t.Fatalf("Run = %v", err)
	}
}

func TestRequiredToolsFollowLayout(t *testing.T) {
	t.Parallel()
	p := newPiEnv(t)
	p.Config.Layout.Table = config.TableMBR
	p.Config.Layout.RootFS = config.FSExt4
	var names []string
	for _, tool := range RequiredTools(p.Env) {
		names = append(names, tool.Name)
	}
	got := strings.Join(names, ",")
	if got != "mkfs.fat,mkswap,swapon,mount,umount,wipefs,lsblk,partx,sfdisk,sgdisk,mkfs.ext4" {
		t.Errorf("tools for mbr+ext4 = %s", got)
	}
}

// A power cut during an earlier apt-get left dpkg's journal behind: the
// redone step finishes that first, since apt-get refuses to run until then.
func TestPackagesFinishesInterruptedDpkg(t *testing.T) {
	t.Parallel()
	p := newPiEnv(t)
	installTools(t, p, "mkfs.btrfs")
	p.networkUp(t)
	p.put(t, "/var/lib/dpkg/updates/0001", "Package: btrfs-progs\nStatus: install ok unpacked\n")
	p.run.On("", p.Tools.Env, "DEBIAN_FRONTEND=noninteractive", p.Tools.Dpkg, "--configure", "-a")
	p.run.On("", p.Tools.Env, "DEBIAN_FRONTEND=noninteractive", p.Tools.AptGet)
	p.run.OnRun = func(argv []string) {
		if argv[2] == p.Tools.Dpkg {
			p.remove(t, "/var/lib/dpkg/updates/0001")
		}
		if argv[3] == "install" {
			p.put(t, p.Tools.MkfsBtrfs, "")
		}
	}
	if err := NewPackages().Run(context.Background(), p.Env); err != nil {
		t.Fatalf("Run: %v\n%s", err, p.log())
	}
	calls := p.run.Calls()
	if len(calls) != 3 || calls[0][2] != p.Tools.Dpkg || calls[1][3] != "update" || calls[2][3] != "install" {
		t.Errorf("commands = %q, want dpkg --configure -a, then apt-get update and install", p.run.Transcript())
	}

	// With nothing left half done, dpkg is not run.
	q := newPiEnv(t)
	installTools(t, q, "mkfs.btrfs")
	q.networkUp(t)
	q.put(t, "/var/lib/dpkg/status", "")
	q.run.On("", q.Tools.Env, "DEBIAN_FRONTEND=noninteractive", q.Tools.AptGet)
	q.run.OnRun = func(argv []string) { q.put(t, q.Tools.MkfsBtrfs, "") }
	if err := NewPackages().Run(context.Background(), q.Env); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(q.run.Transcript(), "dpkg --configure") {
		t.Errorf("dpkg ran with nothing to finish:\n%s", q.run.Transcript())
	}

	// dpkg failing stops the step with a hint.
	r := newPiEnv(t)
	installTools(t, r, "mkfs.btrfs")
	r.networkUp(t)
	r.put(t, "/var/lib/dpkg/updates/0001", "")
	r.run.Fail(1, "dpkg: error processing package btrfs-progs (--configure)", r.Tools.Env, "DEBIAN_FRONTEND=noninteractive", r.Tools.Dpkg)
	err := NewPackages().Run(context.Background(), r.Env)
	if err == nil || !strings.Contains(err.Error(), "dpkg: error processing package btrfs-progs") || !strings.Contains(engine.HintOf(err), "dpkg --configure -a") {
		t.Fatalf("Run = %v (hint %q)", err, engine.HintOf(err))
	}
	if strings.Contains(r.run.Transcript(), "apt-get") {
		t.Errorf("apt-get ran after dpkg failed:\n%s", r.run.Transcript())
	}
}
