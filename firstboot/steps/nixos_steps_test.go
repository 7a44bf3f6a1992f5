package steps_test

// The system, install, firmware and verify steps against a temp root and a
// recording runner. The runner is a test double for Nix: its OnRun makes in
// the temp root what the real nix build / nix copy / nixos-install would
// (store paths, the SSD's profile, extlinux.conf), so each step's own logic
// (argv, probes, progress, resume, checks) runs for real.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/steps"
	"github.com/nixpi/nixpi/firstboot/system"
)

const (
	nixpkgsPath = "/nix/store/0c4vkkq8z4ikn1sd3sbh4nmspv0zf1sk-source"
	toplevel    = "/nix/store/6f0sl2rzkmdhph3zbkm2rd5p4lq2vvxs-nixos-system-nixpi-26.05"
	installTool = "/nix/store/ws3x5dnbh6wvql6cvfbsn2w0jbrhhr5x-nixos-install-tools-26.05"
	firmwarePkg = "/nix/store/a2r3f8p3dd8hpm7bk1y9g7lz0ywb7wv4-raspberrypi-firmware-1.20250430"
	ubootPkg    = "/nix/store/c8y9yjvjc8y0qh8l6sj1l64d7c1h8mvh-uboot-rpi_4_defconfig-2025.01"
	armstubsPkg = "/nix/store/k1kxl5wkf7g31n8p3wbs5n9a9xg8k0f2-raspberrypi-armstubs-2024-06-11"
	// The installed system's kernel, initrd and dtbs (<system>/kernel,
	// initrd, dtbs link there) and the copies extlinux.conf names on the FAT.
	kernelPkg  = "/nix/store/4v7k2b0cd1l5rxmhg8f7h3rq2ypwaxcn-linux-6.12.30"
	initrdPkg  = "/nix/store/xq0xhx5jlbqp2vc8mi9r93zj3r0lc9cs-initrd-linux-6.12.30"
	kernelFile = "../nixos/4v7k2b0cd1l5rxmhg8f7h3rq2ypwaxcn-linux-6.12.30-Image"
	initrdFile = "../nixos/xq0xhx5jlbqp2vc8mi9r93zj3r0lc9cs-initrd-linux-6.12.30-initrd"
	dtbsDir    = "../nixos/4v7k2b0cd1l5rxmhg8f7h3rq2ypwaxcn-linux-6.12.30-dtbs"
)

// The contents of the installed system's boot files, in its store and as
// copied to the FAT.
var systemBootFiles = map[string]string{
	"kernel": "kernel Image 6.12.30", "initrd": "initrd 6.12.30",
	"dtbs/broadcom/bcm2711-rpi-4-b.dtb": "kernel dtb rpi-4-b", "dtbs/broadcom/bcm2711-rpi-400.dtb": "kernel dtb rpi-400",
}

// nixLog is what nix build --log-format internal-json writes to stderr:
// realise, copy-paths and builds activities, a download, a warning.
const nixLog = `@nix {"action":"start","id":1,"level":3,"parent":0,"text":"","type":102}
@nix {"action":"start","id":2,"level":4,"parent":1,"text":"","type":103}
@nix {"action":"start","id":3,"level":4,"parent":1,"text":"","type":104}
@nix {"action":"result","fields":[101,3145728],"id":1,"type":106}
@nix {"action":"result","fields":[0,5,1,0],"id":2,"type":105}
@nix {"action":"start","id":4,"level":4,"parent":0,"text":"downloading 'https://cache.nixos.org/nar/x.nar.xz'","type":101}
@nix {"action":"result","fields":[1048576,2097152,0,0],"id":4,"type":105}
@nix {"action":"result","fields":[2,5,1,0],"id":2,"type":105}
@nix {"action":"msg","level":1,"msg":"warning: ignoring the client-specified setting 'sandbox'"}
@nix {"action":"result","fields":[2097152,2097152,0,0],"id":4,"type":105}
@nix {"action":"stop","id":4}
@nix {"action":"result","fields":[5,5,0,0],"id":2,"type":105}
@nix {"action":"result","fields":[1,1,0,0],"id":3,"type":105}
@nix {"action":"stop","id":1}
`

type nixUnit struct {
	*diskUnit
	plan *disk.Plan
	ran  map[string]int // what the Nix double ran, by kind
}

// installedSSDLsblk is lsblk after the disk steps: the SSD's partitions with
// the planned labels.
func installedSSDLsblk(t *testing.T, plan *disk.Plan) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "lsblk-pi-two-usb.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Blockdevices []map[string]any `json:"blockdevices"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var parts []map[string]any
	for _, p := range plan.Parts {
		node := disk.PartitionNode("/dev/sda", p.Number)
		parts = append(parts, map[string]any{"name": filepath.Base(node), "kname": filepath.Base(node), "path": node, "type": "part",
			"size": p.Sectors * 512, "fstype": p.FSType, "label": p.Label, "uuid": p.FSUUID, "partuuid": p.PartUUID, "mountpoints": []any{nil},
			"maj:min": fmt.Sprintf("8:%d", p.Number)})
	}
	doc.Blockdevices[0]["children"] = parts
	doc.Blockdevices[0]["pttype"] = "gpt"
	out, _ := json.Marshal(doc)
	return string(out)
}

func newNixUnit(t *testing.T) *nixUnit {
	t.Helper()
	u := &nixUnit{diskUnit: newDiskUnit(t, "lsblk-pi-two-usb.json", "mountinfo-pi"), ran: map[string]int{}}
	u.plan = u.recordSSD(t)
	u.lsblk.Stdout = installedSSDLsblk(t, u.plan)
	r := u.env.Root
	u.put(t, "/proc/self/mountinfo", "22 1 179:2 / / rw - ext4 /dev/root rw\n"+
		"30 22 179:1 / /boot/firmware rw - vfat /dev/mmcblk0p1 rw\n"+
		"40 22 0:40 /@ "+r+"/mnt rw - btrfs /dev/sda3 rw,subvol=/@\n"+
		"43 40 8:1 / "+r+"/mnt/boot rw - vfat /dev/sda1 rw\n")
	if err := os.MkdirAll(u.env.Path("/mnt/boot"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := steps.NewConfigure().Run(context.Background(), u.env); err != nil {
		t.Fatal(err)
	}
	u.env.State.Nix = &journal.Nix{Installer: "debian", Version: "2.26.3"}
	u.env.State.NixpkgsPath = nixpkgsPath
	u.put(t, "/usr/bin/nix", "")
	u.put(t, nixpkgsPath+"/nixos/default.nix", "{ configuration, system ? builtins.currentSystem }: { }\n")
	// A clock that moves 20 s per look, so every progress change shows.
	now := time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC)
	u.env.Now = func() time.Time { now = now.Add(20 * time.Second); return now }

	tools := u.env.Tools
	u.run.On("", tools.Swapon)
	u.run.On(toplevel+"\n", "/usr/bin/nix", "build", "--file", nixpkgsPath+"/nixos").Stderr = nixLog
	u.run.On("", "/usr/bin/nix", "copy")
	u.run.On(installTool+"\n", "/usr/bin/nix", "build", "--file", nixpkgsPath, "nixos-install-tools")
	u.run.On(strings.Join([]string{armstubsPkg, firmwarePkg, ubootPkg}, "\n")+"\n", "/usr/bin/nix", "build", "--file", nixpkgsPath, "raspberrypifw")
	u.run.On("", tools.Env)
	u.run.OnRun = func(argv []string) { u.nixDouble(t, argv) }
	return u
}

// nixDouble makes what each Nix command would.
func (u *nixUnit) nixDouble(t *testing.T, argv []string) {
	mnt := u.env.Path("/mnt")
	switch {
	case len(argv) > 4 && argv[1] == "build" && argv[3] == nixpkgsPath+"/nixos":
		u.ran["system"]++
		u.put(t, toplevel+"/init", "#!/bin/sh\n")
	case len(argv) > 1 && argv[1] == "copy":
		u.ran["copy"]++
		u.put(t, "/mnt"+toplevel+"/init", "#!/bin/sh\n")
		for link, target := range map[string]string{"kernel": kernelPkg + "/Image", "initrd": initrdPkg + "/initrd", "dtbs": kernelPkg + "/dtbs"} {
			os.Remove(filepath.Join(mnt, toplevel, link))
			os.Symlink(target, filepath.Join(mnt, toplevel, link))
		}
		u.put(t, "/mnt"+kernelPkg+"/Image", systemBootFiles["kernel"])
		u.put(t, "/mnt"+initrdPkg+"/initrd", systemBootFiles["initrd"])
		for _, dtb := range []string{"bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb"} {
			u.put(t, "/mnt"+kernelPkg+"/dtbs/broadcom/"+dtb, systemBootFiles["dtbs/broadcom/"+dtb])
		}
	case len(argv) > 4 && argv[4] == "nixos-install-tools":
		u.put(t, installTool+"/bin/nixos-install", "")
	case len(argv) > 4 && argv[4] == "raspberrypifw":
		u.ran["firmware"]++
		boot := firmwarePkg + "/share/raspberrypi/boot/"
		for _, f := range []string{"start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb", "overlays/vc4-kms-v3d.dtbo"} {
			u.put(t, boot+f, "firmware "+f)
		}
		u.put(t, ubootPkg+"/u-boot.bin", "U-Boot 2025.01")
		u.put(t, armstubsPkg+"/armstub8-gic.bin", "armstub")
	case len(argv) > 2 && strings.HasSuffix(argv[2], "/bin/nixos-install"):
		u.ran["nixos-install"]++
		profiles := filepath.Join(mnt, "nix/var/nix/profiles")
		os.MkdirAll(profiles, 0o755)
		os.Remove(filepath.Join(profiles, "system"))
		os.Remove(filepath.Join(profiles, "system-1-link"))
		os.Symlink(toplevel, filepath.Join(profiles, "system-1-link"))
		os.Symlink("system-1-link", filepath.Join(profiles, "system"))
		u.put(t, "/mnt/etc/NIXOS", "")
		u.put(t, "/mnt/boot/extlinux/extlinux.conf", "# Generated file, all changes will be lost on nixos-rebuild!\nDEFAULT nixos-default\nTIMEOUT 50\n\n"+
			"LABEL nixos-default\n  MENU LABEL NixOS - Default\n  LINUX "+kernelFile+"\n  INITRD "+initrdFile+"\n  APPEND init="+toplevel+"/init loglevel=4\n  FDTDIR "+dtbsDir+"\n")
		u.put(t, "/mnt/boot/extlinux/"+kernelFile, systemBootFiles["kernel"])
		u.put(t, "/mnt/boot/extlinux/"+initrdFile, systemBootFiles["initrd"])
		for _, dtb := range []string{"bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb"} {
			u.put(t, "/mnt/boot/extlinux/"+dtbsDir+"/broadcom/"+dtb, systemBootFiles["dtbs/broadcom/"+dtb])
		}
	}
}

func (u *nixUnit) transcript() string {
	return strings.ReplaceAll(u.run.Transcript(), u.env.Root, "$ROOT")
}

func (u *nixUnit) run1(t *testing.T, s engine.Step) {
	t.Helper()
	if err := s.Run(context.Background(), u.env); err != nil {
		t.Fatalf("%s: %v", s.Name(), err)
	}
}

func probe(t *testing.T, u *nixUnit, s engine.Step) (bool, string) {
	t.Helper()
	done, why, err := s.Probe(context.Background(), u.env)
	if err != nil {
		t.Fatalf("%s probe: %v", s.Name(), err)
	}
	return done, why
}

type powerCut struct{}

// runUntil runs s with a power cut at point: Run never returns.
func runUntil(t *testing.T, u *nixUnit, s engine.Step, point string) {
	t.Helper()
	u.env.CrashPoint = func(p string) {
		if p == point {
			panic(powerCut{})
		}
	}
	defer func() {
		u.env.CrashPoint = nil
		if recover() != (powerCut{}) {
			t.Fatalf("%s: no power cut at %s", s.Name(), point)
		}
	}()
	_ = s.Run(context.Background(), u.env)
}

func TestSystemBuildsWithSwapOnAndShowsProgress(t *testing.T) {
	t.Parallel()
	u := newNixUnit(t)
	step := steps.NewSystem()
	if done, why := probe(t, u, step); done || why != "the system is not built yet" {
		t.Fatalf("Probe = %v, %q", done, why)
	}
	u.run1(t, step)
	want := "/usr/bin/lsblk -J -b -O\n" +
		"/usr/sbin/swapon /dev/sda2\n" +
		"/usr/bin/nix build --file " + nixpkgsPath + "/nixos --arg configuration $ROOT/mnt/etc/nixos/configuration.nix system --no-link --print-out-paths --log-format internal-json -L\n"
	if got := u.transcript(); got != want {
		t.Errorf("ran:\n%s\nwant:\n%s", got, want)
	}
	if u.env.State.SystemPath != toplevel {
		t.Errorf("SystemPath = %q", u.env.State.SystemPath)
	}
	log := strings.Join(u.logs, "\n")
	for _, line := range []string{
		"system: 0 of 5 paths fetched, 0 of 3 MiB downloaded",
		"system: 2 of 5 paths fetched, 1 of 3 MiB downloaded",
		"system: warning: ignoring the client-specified setting 'sandbox'",
		"system: 5 of 5 paths fetched, 2 of 3 MiB downloaded, 1 of 1 built",
		"NixOS system built: " + toplevel + " (5 of 5 paths fetched, 2 of 3 MiB downloaded, 1 of 1 built)",
	} {
		if !strings.Contains(log, line) {
			t.Errorf("console lacks %q:\n%s", line, log)
		}
	}
	if strings.Contains(log, "@nix") {
		t.Errorf("raw JSON log on the console:\n%s", log)
	}
	if done, why := probe(t, u, step); !done || why != "system already built: "+toplevel {
		t.Errorf("Probe after = %v, %q", done, why)
	}
	// An edit on the SSD (a person fixing their configuration) builds again.
	u.put(t, "/mnt/etc/nixos/configuration.nix", "{ ... }: { imports = [ ./hardware-configuration.nix ]; }\n")
	if done, why := probe(t, u, step); done || why != "the configuration changed since the system was built" {
		t.Errorf("Probe after an edit = %v, %q", done, why)
	}
}

func TestSystemFlakeArgv(t *testing.T) {
	t.Parallel()
	u := newNixUnit(t)
	u.env.Config.NixOS.Flake = "github:you/nixos-config#barpi"
	u.run.On(toplevel+"\n", "/usr/bin/nix", "build", "github:you/nixos-config#nixosConfigurations.barpi.config.system.build.toplevel")
	u.run1(t, steps.NewSystem())
	if got := u.run.Calls()[2]; system.QuoteArgv(got) != `/usr/bin/nix build "github:you/nixos-config#nixosConfigurations.barpi.config.system.build.toplevel" --no-link --print-out-paths --log-format internal-json -L` {
		t.Errorf("ran %q", system.QuoteArgv(got))
	}
}

func TestSystemOutOfMemory(t *testing.T) {
	t.Parallel()
	for name, fail := range map[string]func(u *nixUnit){
		"exit 137": func(u *nixUnit) {
			u.run.Fail(137, nixLog, "/usr/bin/nix", "build", "--file", nixpkgsPath+"/nixos", "--arg")
		},
		"builder killed": func(u *nixUnit) {
			u.run.Fail(1, `@nix {"action":"msg","level":0,"msg":"error: builder for '/nix/store/x-linux-6.12.drv' failed due to signal 9 (Killed)"}`, "/usr/bin/nix", "build", "--file", nixpkgsPath+"/nixos", "--arg")
		},
		"message": func(u *nixUnit) {
			u.run.Fail(1, `@nix {"action":"msg","level":0,"msg":"error: out of memory"}`, "/usr/bin/nix", "build", "--file", nixpkgsPath+"/nixos", "--arg")
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			u := newNixUnit(t)
			fail(u)
			err := steps.NewSystem().Run(context.Background(), u.env)
			if err == nil || !strings.HasPrefix(err.Error(), "system: out of memory") || !strings.Contains(err.Error(), "the Pi has 3.7 GiB of memory and 3.7 GiB of swap") {
				t.Fatalf("error = %v", err)
			}
			// RAM + swap was 7.4 GiB: try double the swap, whole GiB.
			if h := engine.HintOf(err); !strings.Contains(h, `layout.swap_size = "8GiB"`) || !strings.Contains(h, "out of memory") {
				t.Errorf("hint = %q", h)
			}
			// A 3.7 GiB Pi has the NixOS manual (the configuration leaves
			// it out at 2 GiB or less): the hint says how to drop it.
			if h := engine.HintOf(err); !strings.Contains(h, "documentation.nixos.enable = false in nixos.extra_module") || !strings.Contains(h, "Pis with 2GiB or less") {
				t.Errorf("hint = %q", h)
			}
			if strings.Contains(err.Error(), `"action"`) {
				t.Errorf("raw JSON in the error: %v", err)
			}
			if u.env.State.SystemPath != "" {
				t.Error("a system path was recorded")
			}
		})
	}
}

func TestSystemEvaluationErrorNamesNixsMessage(t *testing.T) {
	t.Parallel()
	u := newNixUnit(t)
	u.run.Fail(1, `@nix {"action":"msg","level":0,"msg":"error: The option 'boot.loader.raspberryPi' does not exist."}`, "/usr/bin/nix", "build", "--file", nixpkgsPath+"/nixos", "--arg")
	err := steps.NewSystem().Run(context.Background(), u.env)
	if err == nil || !strings.Contains(err.Error(), "exit status 1: error: The option 'boot.loader.raspberryPi' does not exist.") || strings.Contains(err.Error(), "out of memory") {
		t.Fatalf("error = %v", err)
	}
}

// A power cut after nix build printed the path and before the journal had
// it: the redo builds again (a no-op for Nix) and records the same path.
func TestSystemResumesAfterInterruption(t *testing.T) {
	t.Parallel()
	u := newNixUnit(t)
	step := steps.NewSystem()
	runUntil(t, u, step, "system:built")
	if u.env.State.SystemPath != "" {
		t.Fatal("recorded before the crash point")
	}
	u.env.Redo = true
	u.run1(t, step)
	if u.env.State.SystemPath != toplevel || u.ran["system"] != 2 {
		t.Errorf("SystemPath %q after %d builds", u.env.State.SystemPath, u.ran["system"])
	}
	if done, _ := probe(t, u, step); !done {
		t.Error("not done after the redo")
	}
}

func TestInstallArgvResumeAndSkip(t *testing.T) {
	t.Parallel()
	u := newNixUnit(t)
	u.run1(t, steps.NewSystem())
	step := steps.NewInstall()
	if done, why := probe(t, u, step); done || !strings.Contains(why, "/nix/var/nix/profiles/system on the SSD") {
		t.Fatalf("Probe = %v, %q", done, why)
	}
	before := len(u.run.Calls())
	runUntil(t, u, step, "install:copied")
	u.env.Redo = true
	u.run1(t, step)
	var got []string
	for _, c := range u.run.Calls()[before:] {
		got = append(got, strings.ReplaceAll(system.QuoteArgv(c), u.env.Root, "$ROOT"))
	}
	copyArgv := "/usr/bin/nix copy --no-check-sigs --to \"local?root=$ROOT/mnt\" " + toplevel + " --log-format internal-json"
	want := []string{
		copyArgv,
		copyArgv,
		"/usr/bin/nix build --file " + nixpkgsPath + " nixos-install-tools --no-link --print-out-paths --log-format internal-json",
		"/usr/bin/env PATH=/usr/bin:/usr/sbin:/usr/bin:/sbin:/bin " + installTool + "/bin/nixos-install --root $ROOT/mnt --system " + toplevel + " --no-root-passwd --no-channel-copy",
	}
	if !slices.Equal(got, want) {
		t.Errorf("ran:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if done, why := probe(t, u, step); !done || why != "NixOS already installed on the SSD: "+toplevel {
		t.Errorf("Probe after = %v, %q", done, why)
	}
	// A rerun converges: same profile, nothing else.
	u.run1(t, step)
	if done, _ := probe(t, u, step); !done || u.ran["nixos-install"] != 2 {
		t.Errorf("after a rerun: done %v, nixos-install ran %d times", done, u.ran["nixos-install"])
	}
}

func installed(t *testing.T) *nixUnit {
	u := newNixUnit(t)
	u.run1(t, steps.NewSystem())
	u.run1(t, steps.NewInstall())
	return u
}

func TestFirmwareWritesStart4ElfLastAndResumes(t *testing.T) {
	t.Parallel()
	u := installed(t)
	step := steps.NewFirmware()
	if done, why := probe(t, u, step); done || why != "no boot files on the SSD yet" {
		t.Fatalf("Probe = %v, %q", done, why)
	}
	before := len(u.run.Calls())
	runUntil(t, u, step, "firmware:fixup4.dat")
	if got := u.run.Calls()[before:]; len(got) != 1 || system.QuoteArgv(got[0]) != "/usr/bin/nix build --file "+nixpkgsPath+
		" raspberrypifw ubootRaspberryPi4_64bit raspberrypi-armstubs --no-link --print-out-paths --log-format internal-json" {
		t.Errorf("ran %q", got)
	}
	for _, n := range []string{"config.txt", "start4.elf"} {
		if _, err := os.Stat(u.env.Path("/mnt/boot/" + n)); !os.IsNotExist(err) {
			t.Fatalf("%s written before every boot file: %v", n, err)
		}
	}
	if done, why := probe(t, u, step); done || why != "overlays/vc4-kms-v3d.dtbo on the SSD's boot partition is missing or differs" {
		t.Errorf("Probe after the power cut = %v, %q", done, why)
	}
	u.env.Redo = true
	u.run1(t, step)
	for name, want := range map[string]string{
		"start4.elf": "firmware start4.elf", "fixup4.dat": "firmware fixup4.dat", "bcm2711-rpi-4-b.dtb": "firmware bcm2711-rpi-4-b.dtb",
		"bcm2711-rpi-400.dtb": "firmware bcm2711-rpi-400.dtb", "overlays/vc4-kms-v3d.dtbo": "firmware overlays/vc4-kms-v3d.dtbo",
		"u-boot-rpi4.bin": "U-Boot 2025.01", "armstub8-gic.bin": "armstub", "config.txt": bootfiles.SSDConfigTxt,
	} {
		if got, err := os.ReadFile(u.env.Path("/mnt/boot/" + name)); err != nil || string(got) != want {
			t.Errorf("/mnt/boot/%s = %q, %v", name, got, err)
		}
	}
	for _, line := range []string{"[pi4]\nkernel=u-boot-rpi4.bin\nenable_gic=1\narmstub=armstub8-gic.bin\ndisable_overscan=1\narm_boost=1\n", "[all]\narm_64bit=1\nenable_uart=1\navoid_warnings=1\n"} {
		if !strings.Contains(bootfiles.SSDConfigTxt, line) {
			t.Errorf("config.txt lacks %q", line)
		}
	}
	if strings.Contains(strings.Join(u.logs, "\n"), "bcm2711-rpi-cm4.dtb") || u.env.State.Firmware["bcm2711-rpi-cm4.dtb"] != "" {
		t.Error("an optional dtb the firmware lacks was planned")
	}
	if got := u.env.State.Firmware["u-boot-rpi4.bin"]; got != ubootPkg+"/u-boot.bin" {
		t.Errorf("u-boot source %q", got)
	}
	if done, _ := probe(t, u, step); !done {
		t.Error("not done after the redo")
	}
	// The rerun converges and rewrites nothing but config.txt's check.
	u.run1(t, step)
	if log := strings.Join(u.logs, "\n"); !strings.Contains(log, "wrote 0 boot files and config.txt to the SSD's boot partition (7 already there)") {
		t.Errorf("log:\n%s", log)
	}
}

func TestVerifyPassesAndNamesTheMissingPiece(t *testing.T) {
	t.Parallel()
	u := installed(t)
	u.run1(t, steps.NewFirmware())
	step := steps.NewVerify()
	before := len(u.run.Calls())
	u.run1(t, step)
	for _, c := range u.run.Calls()[before:] {
		if filepath.Base(c[0]) != "lsblk" {
			t.Errorf("verify ran %q", system.QuoteArgv(c))
		}
	}
	for name, tc := range map[string]struct {
		break_ func(u *nixUnit)
		want   string
	}{
		"initrd": {func(u *nixUnit) { os.Remove(u.env.Path("/mnt/boot/extlinux/" + initrdFile)) },
			`/boot/nixos/xq0xhx5jlbqp2vc8mi9r93zj3r0lc9cs-initrd-linux-6.12.30-initrd (INITRD of extlinux.conf's "nixos-default") is missing`},
		"extlinux.conf": {func(u *nixUnit) { os.Remove(u.env.Path("/mnt/boot/extlinux/extlinux.conf")) }, "/boot/extlinux/extlinux.conf is missing"},
		"u-boot":        {func(u *nixUnit) { u.put(t, "/mnt/boot/u-boot-rpi4.bin", "other") }, "/boot/u-boot-rpi4.bin differs from " + ubootPkg + "/u-boot.bin"},
		"NIXOS":         {func(u *nixUnit) { os.Remove(u.env.Path("/mnt/etc/NIXOS")) }, "/etc/NIXOS is missing"},
		"profile": {func(u *nixUnit) { u.env.State.SystemPath = "/nix/store/zzzz-nixos-system-other" },
			"the system profile points at " + toplevel + ", not the built /nix/store/zzzz-nixos-system-other"},
		"partuuid": {func(u *nixUnit) {
			u.lsblk.Stdout = strings.Replace(u.lsblk.Stdout, `"partuuid":"`+u.plan.Part(disk.RoleRoot).PartUUID+`"`, `"partuuid":"other"`, 1)
		},
			"/etc/nixos/hardware-configuration.nix names /dev/disk/by-partuuid/" + u.plan.Part(disk.RoleRoot).PartUUID + ", which no partition of /dev/sda has"},
	} {
		t.Run(name, func(t *testing.T) {
			u := installed(t)
			u.run1(t, steps.NewFirmware())
			tc.break_(u)
			err := step.Run(context.Background(), u.env)
			if err == nil || !strings.HasPrefix(err.Error(), "verify: the SSD is not a complete NixOS install: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v\nwant it to name %q", err, tc.want)
			}
		})
	}
}

func TestAllStepsInOrder(t *testing.T) {
	t.Parallel()
	var names []string
	for _, s := range steps.All() {
		names = append(names, s.Name())
	}
	want := "preflight arm64 packages target partition format mount network nix nixpkgs configure system install firmware verify eeprom trial confirm scrub retire done reboot"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("steps.All() = %s\nwant          %s", got, want)
	}
	// Every step's needs come before it.
	seen := map[string]bool{}
	for _, s := range steps.All() {
		for _, n := range s.Needs() {
			if !seen[n] {
				t.Errorf("%s needs %s, which comes later", s.Name(), n)
			}
		}
		seen[s.Name()] = true
	}
}

// Through the engine and its journal: a power cut inside install, then a
// boot that knows only what the journal kept. The built system comes from
// the journal's state, install is redone and converges, firmware and verify
// follow.
func TestNixStepsResumeThroughTheJournal(t *testing.T) {
	t.Parallel()
	u := newNixUnit(t)
	card := u.env.Path(u.env.BootDir)
	w, err := journal.Create(card)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"mount", "nix"} {
		if err := w.Append(journal.Entry{Step: s, Event: journal.Done, State: mustJSON(t, u.env.State)}); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	u.run.On(`"`+nixpkgsPath+`"`, "/usr/bin/nix-instantiate")
	chain := []engine.Step{steps.NewNixpkgs(), steps.NewConfigure(), steps.NewSystem(), steps.NewInstall(), steps.NewFirmware(), steps.NewVerify()}
	boot := func(crashAt string) (engine.Outcome, error) {
		env := *u.env
		env.State = nil // only the journal remembers
		env.CrashPoint = func(p string) {
			if p == crashAt {
				panic(powerCut{})
			}
		}
		eng := &engine.Engine{Steps: chain, Env: &env}
		defer func() {
			if r := recover(); r != nil && r != (powerCut{}) {
				panic(r)
			}
		}()
		return eng.Run(context.Background(), nil)
	}
	boot("install:copied")
	if out, err := boot(""); out != engine.Finished || err != nil {
		t.Fatalf("second boot: %v, %v", out, err)
	}
	j, err := journal.ReadFile(card)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, e := range j.Entries[2:] {
		events = append(events, e.Step+":"+string(e.Event))
	}
	want := "nixpkgs:start nixpkgs:done configure:skip system:start system:done install:start " +
		"nixpkgs:skip configure:skip system:skip install:start install:done firmware:start firmware:done verify:start verify:done"
	if got := strings.Join(events, " "); got != want {
		t.Errorf("journal:\n%s\nwant:\n%s", got, want)
	}
	if u.ran["system"] != 1 || u.ran["copy"] != 2 || u.ran["nixos-install"] != 1 {
		t.Errorf("ran %v: want one build, the copy redone, one nixos-install", u.ran)
	}
	var st journal.State
	if err := json.Unmarshal(j.Entries[len(j.Entries)-1].State, &st); err != nil || st.SystemPath != toplevel || st.NixpkgsPath != nixpkgsPath || st.Firmware["start4.elf"] == "" {
		t.Errorf("final state %+v, %v", st, err)
	}
}

func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// On a 1 GiB Pi the configuration already leaves the NixOS manual out: the
// out-of-memory hint says so rather than asking for it.
func TestSystemOutOfMemorySmallPi(t *testing.T) {
	t.Parallel()
	u := newNixUnit(t)
	u.env.State.RAMBytes = 1 << 30
	u.run.Fail(137, nixLog, "/usr/bin/nix", "build", "--file", nixpkgsPath+"/nixos", "--arg")
	err := steps.NewSystem().Run(context.Background(), u.env)
	h := engine.HintOf(err)
	if err == nil || !strings.Contains(h, "the NixOS manual is already left out on a Pi with 2GiB or less") || strings.Contains(h, "documentation.nixos.enable = false in") {
		t.Errorf("error %v, hint %q", err, h)
	}
}
