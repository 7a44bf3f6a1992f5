package steps

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/progress"
	"github.com/nixpi/nixpi/firstboot/retire"
	"github.com/nixpi/nixpi/firstboot/system/systemtest"
)

// retireSteps runs eeprom and retire as the engine would: probe, then run.
func runRetire(t *testing.T, h *handoverEnv) {
	t.Helper()
	ctx := context.Background()
	for _, s := range []engine.Step{NewEEPROM(), NewRetire()} {
		done, _, err := s.Probe(ctx, h.Env)
		if err != nil {
			t.Fatal(err)
		}
		if !done {
			if err := s.Run(ctx, h.Env); err != nil {
				t.Fatalf("%s: %v", s.Name(), err)
			}
		}
	}
}

func TestRetireOrders(t *testing.T) {
	t.Parallel()
	for _, order := range []string{"0xf41", "0xf14", "0xf461"} {
		t.Run(order, func(t *testing.T) {
			t.Parallel()
			h := newHandoverEnv(t, order, shippedBootloaderConfig, "2023-01-11")
			boot := h.Path(h.BootDir)
			before := h.card(t)
			h.confirmed()
			runRetire(t, h)
			if !eeprom.SDBeforeUSB(order) {
				after := h.card(t)
				for _, f := range []string{cardpath.EEPROMUpdate, cardpath.EEPROMSig, cardpath.Recovery} {
					delete(after, f)
				}
				if d := diffTrees(before, after); len(d) > 0 {
					t.Errorf("USB first: the card changed beyond the staged files: %v", d)
				}
				done, why, _ := NewRetire().Probe(context.Background(), h.Env)
				if !done || !strings.Contains(why, "fallback") {
					t.Errorf("Probe = %v, %q", done, why)
				}
				return
			}
			if got, want := rootNames(t, boot), "LICENCE.broadcom issue.txt nixpi pieeprom.sig pieeprom.upd recovery.bin"; got != want {
				t.Errorf("root after retire: %s, want %s", got, want)
			}
			if got, want := rootNames(t, filepath.Join(boot, cardpath.Retired)),
				"bcm2711-rpi-4-b.dtb bcm2711-rpi-400.dtb bootcode.bin cmdline.txt config.txt fixup4.dat initramfs8 kernel8.img kernel_2712.img overlays start.elf start4.elf"; got != want {
				t.Errorf("retired: %s, want %s", got, want)
			}
			// Every file kept its contents.
			after := h.card(t)
			for p, sum := range before {
				if strings.HasPrefix(p, "nixpi/") {
					continue
				}
				if after[p] != sum && after[cardpath.Retired+"/"+p] != sum {
					t.Errorf("%s is neither at the root nor in %s with its contents", p, cardpath.Retired)
				}
			}
			m, err := retire.ReadManifest(retire.DirCard(boot))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, f := range m.Moved {
				names = append(names, f.Name)
			}
			// The start files go first, then config.txt: the first rename
			// already makes the bootloader pass the card by.
			if !slices.Equal(names[:3], []string{"start.elf", "start4.elf", "config.txt"}) || len(names) != 12 {
				t.Errorf("move order %v", names)
			}
			if m.BootOrder != order || strings.Join(m.Staged, " ") != "pieeprom.upd pieeprom.sig recovery.bin" {
				t.Errorf("manifest %+v", m)
			}
			done, why, err := NewRetire().Probe(context.Background(), h.Env)
			if !done || err != nil {
				t.Errorf("Probe after retire = %v, %q, %v", done, why, err)
			}
		})
	}
}

// A power cut after the manifest and after every rename: the rerun (the
// engine redoes the step from its start) ends with the same card.
func TestRetirePowerCut(t *testing.T) {
	t.Parallel()
	ref := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	if err := NewEEPROM().Run(context.Background(), ref.Env); err != nil {
		t.Fatal(err)
	}
	ref.confirmed()
	var points []string
	ref.CrashPoint = func(p string) { points = append(points, p) }
	if err := NewRetire().Run(context.Background(), ref.Env); err != nil {
		t.Fatal(err)
	}
	if len(points) != 13 || points[0] != "retire: manifest written" || points[1] != "retire: moved start.elf" {
		t.Fatalf("crash points %q", points)
	}
	want := ref.card(t)
	for _, point := range points {
		h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
		if err := NewEEPROM().Run(context.Background(), h.Env); err != nil {
			t.Fatal(err)
		}
		h.confirmed()
		cutAt(t, h.Env, point, func() error { return NewRetire().Run(context.Background(), h.Env) })
		if point != points[len(points)-1] {
			if done, _, _ := NewRetire().Probe(context.Background(), h.Env); done {
				t.Errorf("cut at %s: Probe says done", point)
			}
		}
		h.CrashPoint = nil
		if err := NewRetire().Run(context.Background(), h.Env); err != nil {
			t.Fatalf("rerun after %s: %v", point, err)
		}
		if d := diffTrees(want, h.card(t)); len(d) > 0 {
			t.Errorf("rerun after a cut at %s: card differs in %v", point, d)
		}
	}
}

// A boot file found both at the root and in retired/ is not guessed at.
func TestRetireRefusesConflict(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	h.confirmed()
	cutAt(t, h.Env, "retire: moved start4.elf", func() error { return NewRetire().Run(context.Background(), h.Env) })
	h.put(t, filepath.Join(h.BootDir, "start4.elf"), "copied back by hand")
	h.CrashPoint = nil
	before := h.card(t)
	err := NewRetire().Run(context.Background(), h.Env)
	if err == nil || !strings.Contains(err.Error(), "both /start4.elf and /nixpi/retired/start4.elf exist") {
		t.Fatalf("err = %v", err)
	}
	if d := diffTrees(before, h.card(t)); len(d) > 0 {
		t.Errorf("the refusal changed %v", d)
	}
}

func TestScrub(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	ctx := context.Background()
	path := h.Path(filepath.Join(h.BootDir, cardpath.Config))
	orig, _ := os.ReadFile(path)
	done, why, err := NewScrub().Probe(ctx, h.Env)
	if done || err != nil || !strings.Contains(why, "wlan.psk") || !strings.Contains(why, "password_hash of bob") {
		t.Fatalf("Probe = %v, %q, %v", done, why, err)
	}
	if strings.Contains(why, "horse") {
		t.Fatal("the probe quoted a secret")
	}
	// A second name for the file shows what becomes of its data: it is
	// overwritten where it lies, never left in freed clusters.
	oldName := filepath.Join(t.TempDir(), "old-nixpi.toml")
	if err := os.Link(path, oldName); err != nil {
		t.Fatal(err)
	}
	if err := NewScrub().Run(ctx, h.Env); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if old, _ := os.ReadFile(oldName); string(old) != string(got) || len(old) < len(orig) {
		t.Errorf("the config was not overwritten in place (%d bytes, %d before):\n%s", len(old), len(orig), old)
	}
	got = bytes.TrimRight(got, "\n")
	for _, secret := range []string{h.Config.Users[0].PasswordHash.Reveal(), h.Config.Users[1].PasswordHash.Reveal(), "correct horse battery"} {
		if strings.Contains(string(got), secret) {
			t.Errorf("the scrubbed config still holds a secret:\n%s", got)
		}
	}
	cfg, err := config.Parse(cardpath.Config, got)
	if err != nil {
		t.Fatalf("scrubbed config does not parse: %v\n%s", err, got)
	}
	if len(cfg.Users) != 1 || cfg.Users[0].Name != "alice" || cfg.Users[0].SSHKeys[0] != testSSHKey || cfg.WLAN.SSID != "garden-net" || cfg.WLAN.PSK != "" {
		t.Errorf("scrubbed config = %+v", cfg)
	}
	for _, want := range []string{"  # password_hash removed by nixpi", "  # psk removed by nixpi", "# [[users]] bob: commented out by nixpi", `#   name = "bob"`} {
		if !strings.Contains(string(got), want) {
			t.Errorf("scrubbed config lacks %q:\n%s", want, got)
		}
	}
	// Everything else is as it was, line for line.
	keep := func(s string) []string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if !strings.Contains(l, "password_hash") && !strings.Contains(l, "psk") && !strings.Contains(l, "bob") && !strings.Contains(l, "[[users]]") {
				out = append(out, strings.TrimPrefix(l, "# "))
			}
		}
		return out
	}
	if !slices.Equal(keep(strings.TrimRight(string(orig), "\n")), keep(string(got))) {
		t.Errorf("scrub changed other lines:\n%s", got)
	}
	ho := h.State.HandOver
	if strings.Join(ho.Logins, "; ") != "alice (ssh key, password); bob (password)" || ho.Hostname != "garden" || len(ho.Scrubbed) != 3 {
		t.Errorf("hand-over state %+v", ho)
	}
	// Idempotent.
	if done, _, err := NewScrub().Probe(ctx, h.Env); !done || err != nil {
		t.Errorf("Probe after scrub = %v, %v", done, err)
	}
	if err := NewScrub().Run(ctx, h.Env); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(path); string(bytes.TrimRight(again, "\n")) != string(got) {
		t.Error("a second scrub changed the file")
	}
}

// A config whose shape the line edit does not know (an inline table) is
// written canonically without its secrets.
func TestScrubInlineTables(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	hash := h.Config.Users[0].PasswordHash.Reveal()
	h.put(t, filepath.Join(h.BootDir, cardpath.Config), "schema = 1\nusers = [{name = \"alice\", password_hash = \""+hash+"\", ssh_keys = [\""+testSSHKey+"\"]}]\nwlan = {ssid = \"x\", psk = \"correct horse battery\", country = \"DE\"}\n")
	if err := NewScrub().Run(context.Background(), h.Env); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(h.Path(filepath.Join(h.BootDir, cardpath.Config)))
	cfg, err := config.Parse(cardpath.Config, got)
	if err != nil || strings.Contains(string(got), hash) || strings.Contains(string(got), "horse") || cfg.Users[0].Name != "alice" {
		t.Errorf("scrubbed: %v\n%s", err, got)
	}
}

// handOverBoot runs the hand-over's steps through the engine, as the card's
// service does (all of them), or as nixpi-firstboot confirm does on NixOS.
func (h *handoverEnv) handOverBoot(t *testing.T) (engine.Outcome, error) {
	t.Helper()
	h.Progress = nil
	eng := &engine.Engine{Steps: HandOver(), Env: h.Env, Display: h.display}
	var only []string
	if h.OnNixOS {
		only = NixOSSteps()
	}
	return eng.Run(context.Background(), only)
}

func (h *handoverEnv) savedHandOver(t *testing.T) *journal.HandOver {
	t.Helper()
	j, err := journal.ReadFile(h.Path(h.BootDir))
	if err != nil {
		t.Fatal(err)
	}
	var st journal.State
	if err := json.Unmarshal(j.LastState(), &st); err != nil {
		t.Fatal(err)
	}
	return st.HandOver
}

// The whole hand-over, boot by boot, after verify: the update staged and a
// plain reboot (the boot ROM flashes it); the order read back, the trial
// files and a tryboot reboot; NixOS confirms from the SSD, scrubs and
// retires the card and stays up. A card brought back afterwards is never
// retired again.
func TestHandOverConfirmedTrial(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	h.markVerified(t)
	machine := h.Machine.(*systemtest.Machine)
	boot := h.Path(h.BootDir)

	// Boot 1: the bootloader lacks the order; the update is staged and
	// nothing else changes before the bootloader runs it.
	if out, err := h.handOverBoot(t); out != engine.RebootRequested || err != nil || machine.Reboots() != 1 || machine.TryReboots() != 0 {
		t.Fatalf("boot 1: %v, %v, reboots %d, tryboots %d", out, err, machine.Reboots(), machine.TryReboots())
	}
	if _, err := os.Stat(filepath.Join(boot, cardpath.TryBoot)); err == nil {
		t.Fatal("boot 1 wrote tryboot.txt before the boot order was read back")
	}

	// Boot 2: the update was flashed; the order is read back, the trial
	// files go on the card and the SSD, and the Pi reboots with tryboot.
	h.flashStaged(t)
	h.nextBoot(t, "boot-2")
	if out, err := h.handOverBoot(t); out != engine.RebootRequested || err != nil || machine.TryReboots() != 1 || machine.Reboots() != 1 {
		t.Fatalf("boot 2: %v, %v, reboots %d, tryboots %d", out, err, machine.Reboots(), machine.TryReboots())
	}
	tryboot, err := os.ReadFile(filepath.Join(boot, cardpath.TryBoot))
	if err != nil || !strings.Contains(string(tryboot), "kernel="+cardpath.TrialUBoot) || !strings.Contains(string(tryboot), "armstub="+cardpath.TrialArmstub) {
		t.Fatalf("tryboot.txt: %v\n%s", err, tryboot)
	}
	if got, _ := os.ReadFile(filepath.Join(boot, cardpath.TrialUBoot)); string(got) != "store u-boot-rpi4.bin\n" {
		t.Errorf("the trial's U-Boot is %q, not the installed system's", got)
	}
	if _, err := os.Stat(filepath.Join(boot, "start4.elf")); err != nil {
		t.Fatalf("the trial retired the card: %v", err)
	}
	rec, err := os.ReadFile(h.Path(filepath.Join(installRoot, cardpath.SSDTrial)))
	if err != nil || !strings.Contains(string(rec), `"card_partuuid":"1234abcd-01"`) {
		t.Fatalf("the SSD's trial record: %v %s", err, rec)
	}
	if fi, err := os.Stat(h.Path(filepath.Join(installRoot, cardpath.SSDBinary))); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("the binary on the SSD: %v", err)
	}
	if ho := h.savedHandOver(t); ho.TrialBoot != 2 || !ho.Trybooted || ho.Confirmed != nil || len(ho.Scrubbed) > 0 {
		t.Errorf("after boot 2: %+v", ho)
	}
	if cfg, _ := os.ReadFile(filepath.Join(boot, cardpath.Config)); !strings.Contains(string(cfg), "correct horse battery") {
		t.Error("the Wi-Fi key was scrubbed before NixOS booted: a failed trial could not be retried")
	}

	// Boot 3: NixOS from the SSD confirms, then scrubs and retires.
	h.asNixOS(t, "boot-3")
	if out, err := h.handOverBoot(t); out != engine.Finished || err != nil || machine.Reboots() != 1 || machine.TryReboots() != 1 {
		t.Fatalf("boot 3 (NixOS): %v, %v, reboots %d, tryboots %d", out, err, machine.Reboots(), machine.TryReboots())
	}
	ho := h.savedHandOver(t)
	if c := ho.Confirmed; c == nil || c.Boot != 3 || c.System != h.State.SystemPath || c.Generation != 1 || strings.Join(c.Addresses, " ") != "192.168.1.42" || c.BootedAt.Unix() != 1764640000 {
		t.Fatalf("confirmation %+v", ho.Confirmed)
	}
	if !ho.Finished || !strings.Contains(ho.Retired, "root entries") || len(ho.Scrubbed) != 3 {
		t.Errorf("after NixOS: %+v", ho)
	}
	if got := rootNames(t, boot); strings.Contains(got, "start4.elf") || strings.Contains(got, cardpath.TryBoot) {
		t.Errorf("the card's root after NixOS confirmed: %s", got)
	}
	if _, err := os.Stat(filepath.Join(boot, cardpath.TrialDir)); err == nil {
		t.Error("the trial's files stayed on the card")
	}
	said := strings.Join(h.display.lines, "\n")
	for _, want := range []string{"NixOS booted from the SSD: confirmed at", "runs from the SSD as garden", "192.168.1.42", "log in as: alice (ssh key, password), bob (password)."} {
		if !strings.Contains(said, want) {
			t.Errorf("the consoles lack %q:\n%s", want, said)
		}
	}
	if strings.Contains(said, "horse") || strings.Contains(said, "$y$") {
		t.Error("a secret reached the consoles")
	}
	for _, c := range h.run.Calls() {
		if c[0] == h.Tools.Systemctl && slices.Contains(c, "disable") {
			t.Errorf("NixOS ran %v: the card's unit is not NixOS's", c)
		}
	}
	if got := ho.ConfirmLine(); !strings.HasPrefix(got, "NixOS booted from the SSD: confirmed at 2026-11-25 03:00:00 UTC (boot 3), address 192.168.1.42") {
		t.Errorf("ConfirmLine = %q", got)
	}

	// The card comes back (nixpi restore-card) and boots: it is not retired
	// again; the service says where NixOS is and disables itself.
	if _, err := retire.Restore(retire.DirCard(boot)); err != nil {
		t.Fatal(err)
	}
	h.put(t, cardpath.UnitWantedBy, "")
	h.nextBoot(t, "boot-4")
	before := h.card(t)
	if out, err := h.handOverBoot(t); out != engine.Finished || err != nil {
		t.Fatalf("restored card: %v, %v", out, err)
	}
	if d := diffTrees(before, h.card(t)); len(d) > 0 {
		t.Errorf("the restored card changed: %v", d)
	}
	if got := h.journalEvents(t); !strings.HasSuffix(got, "start done") {
		t.Errorf("restored card: journal events %q", got)
	}
	if !strings.Contains(strings.Join(h.display.lines, "\n"), "nixpi does not retire it again") {
		t.Errorf("restored card: consoles:\n%s", strings.Join(h.display.lines, "\n"))
	}
}

// A trial that never confirms (U-Boot found no disk, a kernel panic, the
// power cycled): the next boot is the card's, and the service says so,
// retires and scrubs nothing, and stops.
func TestHandOverTrialNotConfirmed(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", "[all]\nBOOT_UART=0\nBOOT_ORDER=0xf41\n", "2023-01-11")
	h.markVerified(t)
	if out, err := h.handOverBoot(t); out != engine.RebootRequested || err != nil || h.Machine.(*systemtest.Machine).TryReboots() != 1 {
		t.Fatalf("boot 1: %v, %v", out, err)
	}
	if _, err := os.Stat(h.Path(filepath.Join(h.BootDir, cardpath.EEPROMUpdate))); err == nil {
		t.Error("an update was staged for a bootloader that already has the order")
	}
	h.nextBoot(t, "boot-2")
	before := h.card(t)
	out, err := h.handOverBoot(t)
	if out != engine.Failed || err == nil || !strings.Contains(err.Error(), "the SSD did not boot NixOS: the trial boot requested in boot 1 never confirmed") {
		t.Fatalf("boot 2: %v, %v", out, err)
	}
	after := h.card(t)
	delete(after, cardpath.Failed)
	if d := diffTrees(before, after); len(d) > 0 {
		t.Errorf("the failed trial changed the card: %v", d)
	}
	said := strings.Join(h.display.lines, "\n")
	for _, want := range []string{"the card still boots Raspberry Pi OS and nothing was retired", "fix: check the SSD"} {
		if !strings.Contains(said, want) {
			t.Errorf("the consoles lack %q:\n%s", want, said)
		}
	}
	if n := len(h.display.leds); n == 0 || h.display.leds[n-1] != progress.Failed {
		t.Errorf("LED %v, want the failure pattern last", h.display.leds)
	}
	if got := h.savedHandOver(t).ConfirmLine(); !strings.Contains(got, "not confirmed") {
		t.Errorf("ConfirmLine = %q", got)
	}
}

// An update that was not flashed (write-protected, no EEPROM): after the
// reboot the order read back is the old one; the service stops there and
// nothing else is done.
func TestHandOverEEPROMNotFlashed(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	h.markVerified(t)
	if out, err := h.handOverBoot(t); out != engine.RebootRequested || err != nil {
		t.Fatalf("boot 1: %v, %v", out, err)
	}
	h.nextBoot(t, "boot-2") // the bootloader still runs its old config
	out, err := h.handOverBoot(t)
	if out != engine.Failed || err == nil || !strings.Contains(err.Error(), "the bootloader update staged in boot 1 was not flashed") {
		t.Fatalf("boot 2: %v, %v", out, err)
	}
	if _, err := os.Stat(h.Path(filepath.Join(h.BootDir, cardpath.TryBoot))); err == nil {
		t.Error("a trial boot was prepared on an order that did not take")
	}
	if h.Machine.(*systemtest.Machine).TryReboots() != 0 {
		t.Error("tryboot requested")
	}
}

// A bootloader with the order but older than tryboot is updated first, as
// one without the order.
func TestHandOverUpdatesABootloaderWithoutTryboot(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", "[all]\nBOOT_UART=0\nWAKE_ON_GPIO=1\nBOOT_ORDER=0xf41\n", "2020-10-02")
	h.markVerified(t)
	if out, err := h.handOverBoot(t); out != engine.RebootRequested || err != nil || h.Machine.(*systemtest.Machine).TryReboots() != 0 {
		t.Fatalf("boot 1: %v, %v", out, err)
	}
	upd, _ := h.staged(t)
	im, err := eeprom.Parse(upd)
	if err != nil {
		t.Fatal(err)
	}
	if ts, _ := im.BuildTimestamp(); ts < MinTrybootVersion {
		t.Errorf("staged a bootloader built %d, before tryboot", ts)
	}
}

// A power cut at every crash point of the hand-over, then the boot that
// follows: the hand-over goes on and the card ends as an uninterrupted run
// leaves it.
func TestHandOverPowerCut(t *testing.T) {
	t.Parallel()
	// all runs the hand-over from boot 1 to NixOS, cutting at point (""
	// for none), and returns the crash points passed.
	all := func(h *handoverEnv, point string) []string {
		var points []string
		h.CrashPoint = func(p string) {
			points = append(points, p)
			if p == point {
				panic(powerCut{p})
			}
		}
		boots := []func(){
			func() {},
			func() { h.flashStaged(t); h.nextBoot(t, "boot-2") },
			func() { h.asNixOS(t, "boot-3") },
		}
		for i := 0; i < len(boots); i++ {
			boots[i]()
			cut := func() (c bool) {
				defer func() {
					if r := recover(); r != nil {
						if _, ok := r.(powerCut); !ok {
							panic(r)
						}
						c = true
					}
				}()
				h.handOverBoot(t)
				return false
			}()
			if cut {
				// The same boot again after the power comes back (NixOS's
				// confirm unit runs again; the card's service too).
				h.CrashPoint = func(p string) { points = append(points, p) }
				if h.OnNixOS {
					h.asNixOS(t, "boot-3b")
				} else {
					h.put(t, "/proc/sys/kernel/random/boot_id", "cut-"+point+"\n")
					h.State = &journal.State{}
				}
				h.handOverBoot(t)
			}
		}
		return points
	}
	ref := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	ref.markVerified(t)
	points := all(ref, "")
	want := ref.card(t)
	if !ref.savedHandOver(t).Finished || len(points) < 15 {
		t.Fatalf("reference run: crash points %q, hand-over %+v", points, ref.savedHandOver(t))
	}
	for _, point := range points {
		h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
		h.markVerified(t)
		all(h, point)
		if ho := h.savedHandOver(t); !ho.Finished || ho.Confirmed == nil {
			t.Errorf("after a cut at %s: hand-over %+v", point, ho)
		}
		if d := diffTrees(want, h.card(t)); len(d) > 0 {
			t.Errorf("after a cut at %s: card differs in %v", point, d)
		}
	}
}

// USB first: the trial is a plain reboot (the SSD boots before the card),
// and the card is not retired: it is the fallback.
func TestHandOverUSBFirstKeepsTheCard(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf14", "[all]\nBOOT_UART=0\nBOOT_ORDER=0xf14\n", "2023-01-11")
	h.markVerified(t)
	machine := h.Machine.(*systemtest.Machine)
	if out, err := h.handOverBoot(t); out != engine.RebootRequested || err != nil || machine.Reboots() != 1 || machine.TryReboots() != 0 {
		t.Fatalf("boot 1: %v, %v", out, err)
	}
	if _, err := os.Stat(h.Path(filepath.Join(h.BootDir, cardpath.TryBoot))); err == nil {
		t.Error("tryboot.txt for an order that boots USB first")
	}
	h.asNixOS(t, "boot-2")
	if out, err := h.handOverBoot(t); out != engine.Finished || err != nil {
		t.Fatalf("NixOS: %v, %v", out, err)
	}
	if _, err := os.Stat(h.Path(filepath.Join(h.BootDir, "start4.elf"))); err != nil {
		t.Errorf("start4.elf: %v", err)
	}
	said := strings.Join(h.display.lines, "\n")
	if !strings.Contains(said, "keep the card in: with BOOT_ORDER 0xf14") || strings.Contains(said, "no longer boots") {
		t.Errorf("consoles:\n%s", said)
	}
}

// On a Pi 5 the hand-over stops at eeprom: nothing staged, scrubbed or
// retired, so the card still boots and can be used elsewhere.
func TestHandOverStopsOnAPi5(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	h.put(t, deviceTreeCompat, "raspberrypi,5-model-b\x00brcm,bcm2712\x00")
	h.markVerified(t)
	h.Progress = nil
	before := h.card(t)
	eng := &engine.Engine{Steps: HandOver(), Env: h.Env, Display: h.display}
	out, err := eng.Run(context.Background(), nil)
	if out != engine.Failed || err == nil || !strings.Contains(err.Error(), "not a BCM2711") {
		t.Fatalf("Run = %v, %v", out, err)
	}
	after := h.card(t)
	delete(after, cardpath.Failed)
	if d := diffTrees(before, after); len(d) > 0 {
		t.Errorf("the card changed: %v", d)
	}
	if h.Machine.(*systemtest.Machine).Reboots() != 0 {
		t.Error("rebooted")
	}
}

// cardHolds says whether any file on the card holds s.
func cardHolds(t *testing.T, card, s string) []string {
	t.Helper()
	var in []string
	filepath.WalkDir(card, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if data, _ := os.ReadFile(p); bytes.Contains(data, []byte(s)) {
				in = append(in, p)
			}
		}
		return nil
	})
	return in
}

// A power cut while the config was overwritten in place leaves it torn;
// the scrubbed copy beside it is whole: the probe sees the scrub as
// unfinished, the rerun finishes it, and no secret is left on the card.
func TestScrubFinishesATornScrub(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	card := h.Path(h.BootDir)
	cfgPath := filepath.Join(card, cardpath.Config)
	orig, _ := os.ReadFile(cfgPath)
	cutAt(t, h.Env, "scrub: wrote "+cardpath.ConfigScrubbed, func() error { return NewScrub().Run(context.Background(), h.Env) })
	h.CrashPoint = nil
	scrubbed, err := os.ReadFile(filepath.Join(card, cardpath.ConfigScrubbed))
	if err != nil {
		t.Fatal(err)
	}
	// Torn: the first half of the new text over the old.
	torn := append(bytes.Clone(scrubbed[:len(scrubbed)/2]), orig[len(scrubbed)/2:]...)
	h.put(t, filepath.Join(h.BootDir, cardpath.Config), string(torn))
	if done, why, err := NewScrub().Probe(context.Background(), h.Env); done || err != nil || !strings.Contains(why, "interrupted") {
		t.Fatalf("Probe = %v, %q, %v", done, why, err)
	}
	if err := NewScrub().Run(context.Background(), h.Env); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"correct horse battery", h.Config.Users[1].PasswordHash.Reveal()} {
		if in := cardHolds(t, card, secret); len(in) > 0 {
			t.Errorf("a secret is still in %v", in)
		}
	}
	if _, err := os.Stat(filepath.Join(card, cardpath.ConfigScrubbed)); err == nil {
		t.Error("the scrubbed copy stays")
	}
	if done, _, err := NewScrub().Probe(context.Background(), h.Env); !done || err != nil {
		t.Errorf("Probe after the rerun = %v, %v", done, err)
	}
}

// Copies of the config (an editor's backup) are zeroed and removed; the
// manifest's sha256 of the config becomes the scrubbed file's; a psk that
// is the network's name does not stop the scrub.
func TestScrubCopiesManifestAndPSKAsSSID(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	card := h.Path(h.BootDir)
	orig, _ := os.ReadFile(filepath.Join(card, cardpath.Config))
	origSum := sha256.Sum256(orig)
	h.put(t, filepath.Join(h.BootDir, cardpath.Config+"~"), string(orig))
	h.put(t, filepath.Join(h.BootDir, "my-wifi.txt"), "the key is correct horse battery\n")
	h.put(t, filepath.Join(h.BootDir, "notes.txt"), "nothing secret\n")
	h.put(t, filepath.Join(h.BootDir, cardpath.Manifest), fmt.Sprintf(`{"nixpi_version":"test","config":{"sha256":%q},"files":[{"path":%q,"size":%d,"sha256":%q},{"path":"nixpi/payload.cpio","size":1,"sha256":"ab"}]}`,
		hex.EncodeToString(origSum[:]), cardpath.Config, len(orig), hex.EncodeToString(origSum[:])))
	if err := NewScrub().Run(context.Background(), h.Env); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{cardpath.Config + "~", "my-wifi.txt"} {
		if _, err := os.Stat(filepath.Join(card, gone)); err == nil {
			t.Errorf("%s holds a secret and stays", gone)
		}
	}
	if _, err := os.Stat(filepath.Join(card, "notes.txt")); err != nil {
		t.Errorf("a file without secrets was removed: %v", err)
	}
	manifest, _ := os.ReadFile(filepath.Join(card, cardpath.Manifest))
	scrubbed, _ := os.ReadFile(filepath.Join(card, cardpath.Config))
	sum := sha256.Sum256(scrubbed)
	if bytes.Contains(manifest, []byte(hex.EncodeToString(origSum[:]))) || !bytes.Contains(manifest, []byte(hex.EncodeToString(sum[:]))) || !bytes.Contains(manifest, []byte("payload.cpio")) {
		t.Errorf("manifest after the scrub:\n%s", manifest)
	}

	// The psk is the SSID: the SSID stays, and that is no leak.
	h = newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	cfg := *h.Config
	cfg.WLAN = &config.WLAN{SSID: "samename", PSK: "samename", Country: "DE"}
	data, err := config.Encode(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.put(t, filepath.Join(h.BootDir, cardpath.Config), string(data))
	if err := NewScrub().Run(context.Background(), h.Env); err != nil {
		t.Fatalf("a psk equal to the SSID: %v", err)
	}
	if done, _, _ := NewScrub().Probe(context.Background(), h.Env); !done {
		t.Error("not scrubbed")
	}
}

// escapeSecretKeys spells the config's secret keys as TOML escapes them
// ("p\u0073k"), which reads the same: the scrub must know them all the same.
func escapeSecretKeys(t *testing.T, h *handoverEnv) []byte {
	t.Helper()
	path := h.Path(filepath.Join(h.BootDir, cardpath.Config))
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	escaped := strings.NewReplacer("psk = ", `"p\u0073k" = `, "password_hash = ", `"password\u005fhash" = `).Replace(string(orig))
	if escaped == string(orig) || !strings.Contains(escaped, `"p\u0073k" = `) {
		t.Fatalf("no secret key to escape in:\n%s", orig)
	}
	if _, err := config.Parse(cardpath.Config, []byte(escaped)); err != nil {
		t.Fatalf("escaped config does not parse: %v", err)
	}
	h.put(t, filepath.Join(h.BootDir, cardpath.Config), escaped)
	return []byte(escaped)
}

// Escaped keys are scrubbed by the line edit (the rest of the file stays
// as it was), as config recognises them.
func TestScrubEscapedKeys(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	escaped := escapeSecretKeys(t, h)
	h.put(t, filepath.Join(h.BootDir, cardpath.Config), "# kept: the owner's note\n"+string(escaped))
	if err := NewScrub().Run(context.Background(), h.Env); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(h.Path(filepath.Join(h.BootDir, cardpath.Config)))
	for _, secret := range []string{"correct horse battery", h.Config.Users[0].PasswordHash.Reveal()} {
		if strings.Contains(string(got), secret) {
			t.Errorf("the scrubbed config still holds a secret:\n%s", got)
		}
	}
	for _, want := range []string{"# kept: the owner's note", "# psk removed by nixpi", "# password_hash removed by nixpi"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("scrubbed config lacks %q (written canonically instead of line by line?):\n%s", want, got)
		}
	}
}

// After a power cut tore a config whose keys are escaped, the rerun still
// finds its secrets' values, and with them an editor's copy to remove.
func TestScrubTornEscapedKeys(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	card := h.Path(h.BootDir)
	escaped := escapeSecretKeys(t, h)
	cutAt(t, h.Env, "scrub: wrote "+cardpath.ConfigScrubbed, func() error { return NewScrub().Run(context.Background(), h.Env) })
	h.CrashPoint = nil
	// What is left does not parse; the copy an editor left beside it holds
	// the Wi-Fi key.
	h.put(t, filepath.Join(h.BootDir, cardpath.Config), string(escaped)+"\n[torn")
	h.put(t, filepath.Join(h.BootDir, cardpath.Dir, "nixpi.toml.bak"), "[wlan]\npsk = \"correct horse battery\"\n")
	if err := NewScrub().Run(context.Background(), h.Env); err != nil {
		t.Fatal(err)
	}
	if in := cardHolds(t, card, "correct horse battery"); len(in) > 0 {
		t.Errorf("the Wi-Fi key is still in %v", in)
	}
}
