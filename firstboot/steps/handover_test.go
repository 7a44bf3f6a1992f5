package steps

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/progress"
	"github.com/nixpi/nixpi/firstboot/retire"
	"github.com/nixpi/nixpi/firstboot/system/systemtest"
)

func TestRetireSDBeforeUSB(t *testing.T) {
	t.Parallel()
	for order, want := range map[string]bool{"0xf41": true, "0xf14": false, "0xf461": true, "0x41": true, "0xf4": false, "0xf40": true, "0xF21": true, "0xf241": true, "0xf412": true, "0xf142": false} {
		if got := retire.SDBeforeUSB(order); got != want {
			t.Errorf("retire.SDBeforeUSB(%s) = %v", order, got)
		}
	}
}

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
			runRetire(t, h)
			if !retire.SDBeforeUSB(order) {
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
	// A second name for the old file shows what becomes of its data.
	oldName := filepath.Join(t.TempDir(), "old-nixpi.toml")
	if err := os.Link(path, oldName); err != nil {
		t.Fatal(err)
	}
	if err := NewScrub().Run(ctx, h.Env); err != nil {
		t.Fatal(err)
	}
	if old, _ := os.ReadFile(oldName); len(old) != len(orig) || strings.Trim(string(old), "\x00") != "" {
		t.Errorf("the replaced file's data was not overwritten: %q", old)
	}
	got, _ := os.ReadFile(path)
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
	if !slices.Equal(keep(string(orig)), keep(string(got))) {
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
	if again, _ := os.ReadFile(path); string(again) != string(got) {
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

// The whole hand-over through the engine, after verify: staged, retired,
// scrubbed, the service disabled, the last message, LED steady, one reboot.
// The boot after that (the card restored by hand) finds nothing to do.
func TestDoneAndRebootThroughTheEngine(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	h.markVerified(t)
	h.Progress = nil
	machine := h.Machine.(*systemtest.Machine)
	eng := &engine.Engine{Steps: HandOver(), Env: h.Env, Display: h.display}
	out, err := eng.Run(context.Background(), nil)
	if out != engine.RebootRequested || err != nil || machine.Reboots() != 1 {
		t.Fatalf("Run = %v, %v, reboots %d", out, err, machine.Reboots())
	}
	if got := h.journalEvents(t); got != "done start done start done start done start done start reboot" {
		t.Errorf("journal events %q", got)
	}
	said := strings.Join(h.display.lines, "\n")
	for _, want := range []string{"as garden.", "192.168.1.23", "log in as: alice (ssh key, password), bob (password).", "remove the card or keep it: it no longer boots"} {
		if !strings.Contains(said, want) {
			t.Errorf("the consoles lack %q:\n%s", want, said)
		}
	}
	if strings.Contains(said, "horse") || strings.Contains(said, "$y$") {
		t.Error("a secret reached the consoles")
	}
	if n := len(h.display.leds); n == 0 || h.display.leds[n-1] != progress.Finished {
		t.Errorf("LED patterns %v, want steady last", h.display.leds)
	}
	systemtest.Golden(t, "handover.argv", h.run.Transcript())

	j, err := journal.ReadFile(h.Path(h.BootDir))
	if err != nil {
		t.Fatal(err)
	}
	var st journal.State
	if err := json.Unmarshal(j.LastState(), &st); err != nil {
		t.Fatal(err)
	}
	ho := st.HandOver
	if ho == nil || !ho.Finished || !ho.Rebooted || ho.Address != "192.168.1.23" || !strings.Contains(ho.Retired, "12 root entries") || len(ho.Staged) != 3 {
		t.Errorf("saved hand-over %+v", ho)
	}

	// The card comes back (restore-card) and boots: nothing is redone.
	h.put(t, "/proc/sys/kernel/random/boot_id", "boot-2\n")
	h.State = &journal.State{}
	calls := len(h.run.Calls())
	eng = &engine.Engine{Steps: HandOver(), Env: h.Env, Display: h.display}
	if out, err := eng.Run(context.Background(), nil); out != engine.Finished || err != nil || machine.Reboots() != 1 {
		t.Fatalf("second boot: %v, %v, reboots %d", out, err, machine.Reboots())
	}
	if got := h.journalEvents(t); !strings.HasSuffix(got, "reboot skip skip skip skip skip") {
		t.Errorf("journal events %q", got)
	}
	for _, c := range h.run.Calls()[calls:] {
		if c[0] == h.Tools.Systemctl {
			t.Errorf("second boot ran %v", c)
		}
	}
}

// A power cut at every crash point of the hand-over, then a reboot into the
// card again: the install goes on and the card ends as an uninterrupted
// run leaves it.
func TestHandOverPowerCut(t *testing.T) {
	t.Parallel()
	run := func(h *handoverEnv) (engine.Outcome, error) {
		h.Progress = nil
		eng := &engine.Engine{Steps: HandOver(), Env: h.Env, Display: h.display}
		return eng.Run(context.Background(), nil)
	}
	ref := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	ref.markVerified(t)
	var points []string
	ref.CrashPoint = func(p string) { points = append(points, p) }
	if out, err := run(ref); out != engine.RebootRequested || err != nil {
		t.Fatal(out, err)
	}
	want := ref.card(t)
	if len(points) != 17 || points[3] != "scrub: replaced nixpi/nixpi.toml" {
		t.Fatalf("crash points %q", points)
	}
	for _, point := range points {
		h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
		h.markVerified(t)
		cutAt(t, h.Env, point, func() error { _, err := run(h); return err })
		h.CrashPoint = nil
		h.put(t, "/proc/sys/kernel/random/boot_id", "boot-2\n")
		h.State = &journal.State{}
		if out, err := run(h); out != engine.RebootRequested || err != nil {
			t.Fatalf("after a cut at %s: %v, %v", point, out, err)
		}
		if d := diffTrees(want, h.card(t)); len(d) > 0 {
			t.Errorf("after a cut at %s: card differs in %v", point, d)
		}
	}
}

// USB first: the card is not retired and the last message says to keep it.
func TestDoneUSBFirstKeepsTheCard(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf14", shippedBootloaderConfig, "2023-01-11")
	h.markVerified(t)
	h.Progress = nil
	eng := &engine.Engine{Steps: HandOver(), Env: h.Env, Display: h.display}
	if out, err := eng.Run(context.Background(), nil); out != engine.RebootRequested || err != nil {
		t.Fatalf("Run = %v, %v", out, err)
	}
	if _, err := os.Stat(h.Path(filepath.Join(h.BootDir, "start4.elf"))); err != nil {
		t.Errorf("start4.elf: %v", err)
	}
	said := strings.Join(h.display.lines, "\n")
	if !strings.Contains(said, "keep the card in: with BOOT_ORDER 0xf14") || strings.Contains(said, "no longer boots") {
		t.Errorf("consoles:\n%s", said)
	}
	if got := h.journalEvents(t); got != "done start done start done skip start done start reboot" {
		t.Errorf("journal events %q", got)
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
