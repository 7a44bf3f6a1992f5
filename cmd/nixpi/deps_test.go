package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/nixpi/nixpi/"

// deviceService are the packages that only make sense on the Pi. The host
// reads what they write (journal, card, disks) through the contract
// packages, never by linking them.
var deviceService = []string{
	"firstboot/engine", "firstboot/steps", "firstboot/network",
	"firstboot/progress", "firstboot/hook", "firstboot/statuspage",
}

// contract are the packages both sides share: what the card holds, how
// the journal, the config and the boot files are written, and the
// block-device model both sides judge a disk by, and the disk plan (firstboot/disk:
// `nixpi test --qemu` checks an installed SSD against the plan the Pi's steps made,
// not a second reading of the layout).
var contract = []string{
	"firstboot/cardpath", "firstboot/config", "firstboot/journal", "firstboot/bootfiles",
	"firstboot/nixos", "firstboot/inputfile", "firstboot/retire", "firstboot/configcheck",
	"firstboot/termtext", "firstboot/blockdev", "firstboot/disk", "firstboot/eeprom",
	"firstboot/system",
}

// goListDeps is `go list -deps` of pkgs, for goos/goarch.
func goListDeps(t *testing.T, goos, goarch string, pkgs ...string) map[string]bool {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-deps", "-f", "{{.ImportPath}}"}, pkgs...)...)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %v: %v", pkgs, err)
	}
	deps := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		deps[p] = true
	}
	return deps
}

func TestHostLinksNoDeviceService(t *testing.T) {
	t.Parallel()
	deps := goListDeps(t, "linux", "amd64", "./cmd/nixpi")
	for _, p := range deviceService {
		if deps[module+p] {
			t.Errorf("nixpi links %s: the host reads journals, cards and disks through %v, it does not need the device service", p, contract)
		}
	}
}

func TestDeviceLinksNoHostCode(t *testing.T) {
	t.Parallel()
	for _, arch := range []string{"arm64", "arm"} {
		for p := range goListDeps(t, "linux", arch, "./cmd/nixpi-firstboot") {
			if strings.HasPrefix(p, module+"builder") || strings.HasPrefix(p, "github.com/diskfs/go-diskfs") {
				t.Errorf("nixpi-firstboot (linux/%s) links %s: the device binary must stay small and never carry the image builder", arch, p)
			}
		}
	}
}

func TestContractImportsNoDeviceService(t *testing.T) {
	t.Parallel()
	for _, c := range contract {
		deps := goListDeps(t, "linux", "arm64", "./"+c)
		for _, p := range deviceService {
			if deps[module+p] {
				t.Errorf("contract package %s imports %s: both sides read it, so it may import only other contract packages", c, p)
			}
		}
		for p := range deps {
			if strings.HasPrefix(p, module+"builder") || strings.HasPrefix(p, "github.com/diskfs/go-diskfs") {
				t.Errorf("contract package %s imports %s: the device binary links it, and must never carry the image builder", c, p)
			}
		}
	}
}
