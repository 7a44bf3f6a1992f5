package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/retire"
)

// rootBootFiles are files of the base card's FAT root that a Pi 4 boots
// from; after the hand-over none of them may be left at the root.
var rootBootFiles = []string{pi4Firmware, "fixup4.dat", cardpath.ConfigTxt, cardpath.Cmdline, "kernel8.img", "initramfs8", "bcm2711-rpi-4-b.dtb"}

// HandOverWant is what the hand-over must leave on the card.
type HandOverWant struct {
	// BootOrder is the config's boot.boot_order.
	BootOrder string
	// Image and Recovery are the bootloader files the base image carries
	// (BaseRecipe.Bootloader): the staged update must be Image with
	// BootOrder set and every other setting kept, and recovery.bin a copy
	// of Recovery. Empty (a base given by the user): only the update's own
	// consistency is checked.
	Image, Recovery string
	// Secrets may not be left in the card's nixpi.toml.
	Secrets []string
	// Address: the machine had a network, so the last message must give
	// the address it had.
	Address bool
}

// CheckHandOver checks the card of a run that handed the Pi over to the SSD
// against the card before it (hooked): the machine asked for a reboot; the
// boot files are gone from the root, each under nixpi/retired/ with its
// content and listed in the manifest; the staged EEPROM update has the
// boot order and a matching pieeprom.sig; recovery.bin is there; the
// config keeps no secret; the journal records the hand-over.
func (e *E2E) CheckHandOver(ctx context.Context, in *Install, hooked string, want HandOverWant) Problems {
	var p Problems
	if !in.HandedOver {
		p.addf("%s: the card still boots after the service's last boot: the hand-over did not retire it", in.Name)
		return p
	}
	cardBoots := in.CardBoots()
	if len(cardBoots) == 0 {
		p.addf("%s: the card never booted", in.Name)
		return p
	}
	last := cardBoots[len(cardBoots)-1]
	if last.End != EndReboot {
		p.addf("%s: the card's last boot ended with %s, want the reboot into the SSD", in.Name, last.End)
	}
	if console, err := os.ReadFile(last.Console); err != nil || !strings.Contains(string(console), "reboot: Restarting system") {
		p.addf("%s: the card's last boot's console (%s) does not show the kernel restarting the machine", in.Name, last.Console)
	}
	card, err := OpenCard(in.Card, e.Run, e.Tools)
	if err != nil {
		p.addf("%s: %v", in.Name, err)
		return p
	}
	before, err := OpenCard(hooked, e.Run, e.Tools)
	if err != nil {
		p.addf("%s: %v", in.Name, err)
		return p
	}

	manifestData, err := card.ReadFile(ctx, cardpath.RetiredManifest)
	var m retire.Manifest
	if err == nil {
		err = json.Unmarshal(manifestData, &m)
	}
	if err != nil {
		p.addf("%s: the retired card's manifest: %v", in.Name, err)
	}
	moved := map[string]retire.File{}
	for _, f := range m.Moved {
		moved[f.Name] = f
	}
	for _, name := range rootBootFiles {
		orig, err := before.ReadFile(ctx, name)
		if err != nil {
			p.addf("%s: the hooked card: %v", in.Name, err)
			continue
		}
		if _, err := card.ReadFile(ctx, name); !errors.Is(err, fs.ErrNotExist) {
			p.addf("%s: %s is still at the card's root after the hand-over (%v)", in.Name, name, err)
		}
		got, err := card.ReadFile(ctx, path.Join(cardpath.Retired, name))
		switch {
		case err != nil:
			p.addf("%s: %s was not moved to %s: %v", in.Name, name, cardpath.Retired, err)
		case !bytes.Equal(got, orig):
			p.addf("%s: %s/%s differs from the file it was at the root", in.Name, cardpath.Retired, name)
		}
		if f, ok := moved[name]; !ok || f.SHA256 != sha256Hex(orig) {
			p.addf("%s: the manifest does not list %s with its sha256 (%+v)", in.Name, name, f)
		}
	}
	if m.BootOrder != want.BootOrder {
		p.addf("%s: the manifest records boot order %q, want %q", in.Name, m.BootOrder, want.BootOrder)
	}

	p = append(p, e.checkStaged(ctx, in.Name, card, want, len(in.EEPROMUpdates) > 0)...)
	p = append(p, checkFlashed(in, want.BootOrder, e.SSDBoots)...)

	toml, err := card.ReadFile(ctx, cardpath.Config)
	if err != nil {
		p.addf("%s: %v", in.Name, err)
	}
	for _, s := range CheckNoSecrets(map[string]string{"the card's " + cardpath.Config: string(toml)}, want.Secrets) {
		p.addf("%s: %s", in.Name, s)
	}

	state, err := in.Journal.CurrentState()
	switch {
	case err != nil:
		p.addf("%s: %v", in.Name, err)
	case state.HandOver == nil:
		p.addf("%s: the journal records no hand-over", in.Name)
	default:
		ho := state.HandOver
		// A config without secrets leaves nothing to scrub.
		if !ho.Finished || ho.Confirmed == nil || !ho.Trybooted || ho.TrialBoot == 0 || ho.BootOrder != want.BootOrder || len(ho.Staged) != 3 || (len(want.Secrets) > 0) != (len(ho.Scrubbed) > 0) {
			p.addf("%s: the journal's hand-over is %+v, want finished, confirmed by NixOS after a tryboot, boot order %s, three files staged, secrets scrubbed if the config has any (%d)", in.Name, *ho, want.BootOrder, len(want.Secrets))
		}
		p = append(p, checkConfirmedTrial(in, ho)...)
		for _, name := range []string{cardpath.TryBoot, cardpath.TrialUBoot} {
			if _, err := card.ReadFile(ctx, name); !errors.Is(err, fs.ErrNotExist) {
				p.addf("%s: the trial's %s is still on the card after NixOS confirmed (%v)", in.Name, name, err)
			}
		}
		if want.Address && ho.Address == "" {
			p.addf("%s: the hand-over's last message has no address for the Pi, though it had a network", in.Name)
		}
	}
	return p
}

// checkStaged checks the EEPROM update at the card's root; flashed: the
// harness's boot ROM has flashed it since, and renamed recovery.bin.
func (e *E2E) checkStaged(ctx context.Context, name string, card *Card, want HandOverWant, flashed bool) Problems {
	var p Problems
	upd, err := card.ReadFile(ctx, cardpath.EEPROMUpdate)
	if err != nil {
		p.addf("%s: no staged EEPROM update: %v", name, err)
		return p
	}
	im, err := eeprom.Parse(upd)
	if err != nil {
		p.addf("%s: the staged %s is no bootloader image: %v", name, cardpath.EEPROMUpdate, err)
		return p
	}
	if got, _ := eeprom.Lookup(im.Config(), "BOOT_ORDER"); got != want.BootOrder {
		p.addf("%s: the staged update's BOOT_ORDER is %q, want %q; its config:\n%s", name, got, want.BootOrder, im.Config())
	}
	sig, err := card.ReadFile(ctx, cardpath.EEPROMSig)
	if err != nil || !eeprom.SigMatches(sig, upd) || !bytes.Contains(sig, []byte("\nts: ")) {
		p.addf("%s: %s does not hold %s's sha256 and a ts: line (%v): %q", name, cardpath.EEPROMSig, cardpath.EEPROMUpdate, err, sig)
	}
	recoveryName := cardpath.Recovery
	if flashed {
		recoveryName = cardpath.RecoveryDone
	}
	recovery, err := card.ReadFile(ctx, recoveryName)
	if err != nil {
		p.addf("%s: %s is not at the card's root: %v", name, recoveryName, err)
	}
	if want.Image == "" {
		return p
	}
	if orig, err := os.ReadFile(want.Recovery); err != nil || !bytes.Equal(recovery, orig) {
		p.addf("%s: %s differs from Raspberry Pi OS's %s (%v)", name, recoveryName, want.Recovery, err)
	}
	wantUpd, err := expectedUpdate(want.Image, want.BootOrder)
	if err != nil {
		p.addf("%s: %v", name, err)
	} else if !bytes.Equal(upd, wantUpd) {
		p.addf("%s: the staged update is not %s with only BOOT_ORDER=%s set (sha256 %s, want %s)", name, filepath.Base(want.Image), want.BootOrder, sha256Hex(upd), sha256Hex(wantUpd))
	}
	return p
}

// checkFlashed checks what the harness's boot ROM did with the staged
// update: flashed once, with the wanted order, before the first boot that
// passed over the retired card. Without a bootable SSD the harness stops
// before that boot, and nothing may have been flashed yet.
func checkFlashed(in *Install, order string, ssdBoots bool) Problems {
	var p Problems
	switch {
	case len(in.EEPROMUpdates) == 0 && ssdBoots:
		p.addf("%s: the staged EEPROM update was never flashed: recovery.bin did not run (is %s with a matching %s at the card's root?)", in.Name, cardpath.EEPROMUpdate, cardpath.EEPROMSig)
	case len(in.EEPROMUpdates) > 1:
		p.addf("%s: the boot ROM flashed %d updates, want one: %+v", in.Name, len(in.EEPROMUpdates), in.EEPROMUpdates)
	case len(in.EEPROMUpdates) == 1 && in.EEPROMUpdates[0].BootOrder != order:
		p.addf("%s: the flashed bootloader has BOOT_ORDER %s, want %s", in.Name, in.EEPROMUpdates[0].BootOrder, order)
	case len(in.EEPROMUpdates) == 1:
		// Nothing may depend on the new order before it is flashed: the
		// update goes in before the card boots again to read it back, and
		// so before the trial.
		if len(in.TrybootRequests) > 0 && in.EEPROMUpdates[0].Boot > in.TrybootRequests[0] {
			p.addf("%s: the update was flashed before boot %d, after the trial was requested in boot %d", in.Name, in.EEPROMUpdates[0].Boot, in.TrybootRequests[0])
		}
	}
	if ssdBoots && in.EEPROM.BootOrder() != order {
		p.addf("%s: the bootloader ends with BOOT_ORDER %s, want %s", in.Name, in.EEPROM.BootOrder(), order)
	}
	return p
}

// checkConfirmedTrial checks that the confirmation came from NixOS booted
// through the trial: the boot after the tryboot request read the card's
// tryboot.txt and reached multi-user.target on the SSD, and the card's
// retirement came after it.
func checkConfirmedTrial(in *Install, ho *journal.HandOver) Problems {
	var p Problems
	if len(in.TrybootRequests) != 1 {
		p.addf("%s: the guest asked for %d tryboot reboots (%v), want one", in.Name, len(in.TrybootRequests), in.TrybootRequests)
		return p
	}
	trial := in.TrybootRequests[0] + 1
	if trial > len(in.Boots) || in.Boots[trial-1].Source != SourceTryboot || !in.Boots[trial-1].MultiUser {
		p.addf("%s: boot %d, after the tryboot request, did not bring NixOS up from the card's tryboot.txt", in.Name, trial)
	}
	if ho.Confirmed == nil {
		return p
	}
	if !strings.Contains(ho.ConfirmLine(), "NixOS booted from the SSD: confirmed at") {
		p.addf("%s: the confirmation reads %q", in.Name, ho.ConfirmLine())
	}
	return p
}

// expectedUpdate is image with BOOT_ORDER set in its own config, every
// other byte kept: what rpi-eeprom-config --config writes for it (the
// eeprom package is tested byte for byte against it).
func expectedUpdate(image, order string) ([]byte, error) {
	data, err := os.ReadFile(image)
	if err != nil {
		return nil, err
	}
	im, err := eeprom.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", image, err)
	}
	cfg, err := eeprom.SetBootOrder(im.Config(), order)
	if err != nil {
		return nil, err
	}
	if err := im.SetConfig(cfg); err != nil {
		return nil, err
	}
	return im.Bytes(), nil
}

// restoredServiceGrace is how long a restored card's boot may go on after
// its login prompt for the service to finish.
const restoredServiceGrace = 3 * time.Minute

// serviceEnd is the service's last line in a run that finished its steps.
var serviceEnd = regexp.MustCompile(`nixpi: all \d+ steps done`)

// RestoreBoot undoes the hand-over on a copy of the run's card with nixpi
// restore-card's code, checks the boot files are back and the staged
// update gone, then boots the copy with a blank SSD: the card must boot
// its Raspberry Pi OS to multi-user.target (the login prompt) with no hook
// and no service.
func (e *E2E) RestoreBoot(ctx context.Context, in *Install, hooked string) (Problems, error) {
	var p Problems
	dir := filepath.Join(e.Dir, in.Name+"-restored")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	card := filepath.Join(dir, "card.img")
	if err := CopySparseFile(in.Card, card); err != nil {
		return nil, err
	}
	r, err := builder.RestoreCard(card)
	if err != nil {
		return nil, fmt.Errorf("restore-card: %w", err)
	}
	e.logf("%s: restore-card put back %d entries and removed %v", in.Name, len(r.Moved), r.Removed)
	restored, err := OpenCard(card, e.Run, e.Tools)
	if err != nil {
		return nil, err
	}
	before, err := OpenCard(hooked, e.Run, e.Tools)
	if err != nil {
		return nil, err
	}
	for _, name := range rootBootFiles {
		orig, err := before.ReadFile(ctx, name)
		got, gerr := restored.ReadFile(ctx, name)
		if err != nil || gerr != nil || !bytes.Equal(got, orig) {
			p.addf("restore-card: %s is not back at the card's root as it was (%v, %v)", name, err, gerr)
		}
	}
	for _, name := range []string{cardpath.EEPROMUpdate, cardpath.EEPROMSig, cardpath.Recovery, cardpath.RecoveryDone} {
		if _, err := restored.ReadFile(ctx, name); !errors.Is(err, fs.ErrNotExist) {
			p.addf("restore-card: the staged %s is still on the card (%v)", name, err)
		}
	}
	ssd := filepath.Join(dir, "ssd.img")
	if err := e.BlankSSD(ssd); err != nil {
		return p, err
	}
	defer os.Remove(ssd)
	// The login prompt says the card booted its Raspberry Pi OS; systemd's
	// own "Reached target multi-user.target" is not printed once a getty
	// owns the console. The hand-over finished on NixOS, so the card's own
	// service is still enabled: on the restored card's first boot it runs
	// only done, which says where NixOS is and disables itself; no other
	// step may run. The boot ends when the service has said its last word,
	// or a while after the prompt if it never does.
	var loggedIn time.Time
	var service, serviceEnded bool
	watch := func(line string) Action {
		if m := stepHeader.FindStringSubmatch(line); m != nil && m[1] != "done" {
			service = true
		}
		if serviceEnd.MatchString(line) {
			serviceEnded = true
		}
		if strings.HasSuffix(line, string(loginPrompt)) && loggedIn.IsZero() {
			loggedIn = time.Now()
		}
		if !loggedIn.IsZero() && (serviceEnded || time.Since(loggedIn) > restoredServiceGrace) {
			return PowerOff
		}
		return Continue
	}
	res, err := e.bootCard(ctx, e.vm(dir, card, ssd), e.pi(dir, card, ssd), watch)
	if err != nil {
		return p, fmt.Errorf("boot the restored card: %w", err)
	}
	if loggedIn.IsZero() {
		p.addf("the restored card did not boot to its login prompt (ended with %s; console %s)", res.End, res.Console)
	}
	if !serviceEnded {
		p.addf("the restored card's service never said it was done (console %s): its only step, done, must finish and disable it", res.Console)
	}
	if service {
		p.addf("the restored card ran a step of nixpi's service other than done (console %s): a finished hand-over must never retire it again", res.Console)
	}
	if _, err := restored.ReadFile(ctx, pi4Firmware); err != nil {
		p.addf("restore-card: after its boot the restored card has no %s: it was retired again (%v)", pi4Firmware, err)
	}
	if console, err := os.ReadFile(res.Console); err == nil && hookUnit.Match(console) {
		p.addf("the restored card ran the first-boot hook again (console %s)", res.Console)
	}
	return p, nil
}

// NewBystander makes a USB disk with an ext4 filesystem holding a file,
// and returns its sha256: after a run it must be byte-identical.
func (e *E2E) NewBystander(ctx context.Context, path string) (string, error) {
	if err := NewBlankDisk(path, 1<<30); err != nil {
		return "", err
	}
	data, err := os.MkdirTemp(e.Dir, "bystander-data-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(data)
	if err := os.WriteFile(filepath.Join(data, "thesis.txt"), []byte("a disk that was plugged in and must not be touched\n"), 0o644); err != nil {
		return "", err
	}
	if _, err := run(ctx, e.Run, e.Tools.MkfsExt4, "-q", "-F", "-L", "thesis", "-d", data, path); err != nil {
		return "", err
	}
	return SHA256File(path)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
