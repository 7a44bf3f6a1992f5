package steps

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/system/systemtest"
)

func (h *handoverEnv) staged(t *testing.T) (upd, sig []byte) {
	t.Helper()
	upd, err := os.ReadFile(h.Path(filepath.Join(h.BootDir, cardpath.EEPROMUpdate)))
	if err != nil {
		t.Fatal(err)
	}
	sig, err = os.ReadFile(h.Path(filepath.Join(h.BootDir, cardpath.EEPROMSig)))
	if err != nil {
		t.Fatal(err)
	}
	return upd, sig
}

func (h *handoverEnv) assertNothingStaged(t *testing.T) {
	t.Helper()
	for _, f := range []string{cardpath.EEPROMUpdate, cardpath.EEPROMSig, cardpath.Recovery} {
		if _, err := os.Stat(h.Path(filepath.Join(h.BootDir, f))); err == nil {
			t.Errorf("%s was staged", f)
		}
	}
}

// The factory bootloader config gets BOOT_ORDER=0xf41 in the newest default
// image: byte for byte what rpi-eeprom-config writes for that image and
// config, with a .sig carrying its sha256 and the ts line.
func TestEEPROMStagesWhatRpiEepromConfigWrites(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2022-11-25")
	ctx := context.Background()
	step := NewEEPROM()
	done, why, err := step.Probe(ctx, h.Env)
	if done || err != nil || !strings.Contains(why, "does not have BOOT_ORDER=0xf41") {
		t.Fatalf("Probe = %v, %q, %v", done, why, err)
	}
	if err := step.Run(ctx, h.Env); err != nil {
		t.Fatal(err)
	}
	upd, sig := h.staged(t)
	sum := sha256.Sum256(upd)
	if got, want := hex.EncodeToString(sum[:]), referenceSHA256(t, "images/pieeprom-2023-01-11.bin", "boot-order"); got != want {
		t.Errorf("pieeprom.upd sha256 %s, rpi-eeprom-config wrote %s", got, want)
	}
	wantSig := hex.EncodeToString(sum[:]) + "\nts: " + strconv.FormatInt(h.Clock().Unix(), 10) + "\n"
	if string(sig) != wantSig {
		t.Errorf("pieeprom.sig = %q, want %q", sig, wantSig)
	}
	recovery, _ := os.ReadFile(h.Path(filepath.Join(h.BootDir, cardpath.Recovery)))
	if want, _ := os.ReadFile(filepath.Join(rpiEEPROMData(t), "recovery.bin")); !bytes.Equal(recovery, want) {
		t.Error("recovery.bin is not the release's")
	}
	ho := h.State.HandOver
	if ho == nil || ho.BootOrder != "0xf41" || strings.Join(ho.Staged, " ") != "pieeprom.upd pieeprom.sig recovery.bin" ||
		!strings.Contains(ho.EEPROM, "pieeprom-2023-01-11.bin") || !strings.HasPrefix(ho.Bootloader, "2022-11-25") {
		t.Errorf("hand-over state = %+v", ho)
	}
	systemtest.Golden(t, "eeprom-stage.argv", h.run.Transcript())

	// Already staged: the probe says so, a rerun writes nothing (the .sig
	// keeps its timestamp).
	done, why, err = step.Probe(ctx, h.Env)
	if !done || err != nil || !strings.Contains(why, "staged") {
		t.Fatalf("Probe after staging = %v, %q, %v", done, why, err)
	}
	before := h.card(t)
	h.Now = func() time.Time { return time.Unix(1800000000, 0) }
	if err := step.Run(ctx, h.Env); err != nil {
		t.Fatal(err)
	}
	if d := diffTrees(before, h.card(t)); len(d) > 0 {
		t.Errorf("staging again changed %v", d)
	}
}

// Every boot order the config allows is staged as given, every other key
// kept; the image differs from the source only in its config.
func TestEEPROMBootOrders(t *testing.T) {
	t.Parallel()
	current := "[all]\nBOOT_UART=1\nWAKE_ON_GPIO=1\nPOWER_OFF_ON_HALT=1\nBOOT_ORDER=0x1\nUSB_MSD_PWR_OFF_TIME=1000\n"
	for _, order := range []string{"0xf41", "0xf14", "0xf461"} {
		t.Run(order, func(t *testing.T) {
			t.Parallel()
			h := newHandoverEnv(t, order, current, "2023-01-11")
			if err := NewEEPROM().Run(context.Background(), h.Env); err != nil {
				t.Fatal(err)
			}
			upd, _ := h.staged(t)
			im, err := eeprom.Parse(upd)
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Replace(current, "BOOT_ORDER=0x1", "BOOT_ORDER="+order, 1)
			if string(im.Config()) != want {
				t.Errorf("staged config %q, want %q", im.Config(), want)
			}
			src, err := os.ReadFile(filepath.Join(rpiEEPROMData(t), "images", "pieeprom-2023-01-11.bin"))
			if err != nil {
				t.Fatal(err)
			}
			srcIm, _ := eeprom.Parse(src)
			if err := srcIm.SetConfig([]byte(want)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(srcIm.Bytes(), upd) {
				t.Error("pieeprom.upd is not the source image with only its config replaced")
			}
		})
	}
}

func TestEEPROMAlreadySet(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", "[all]\nBOOT_UART=0\nWAKE_ON_GPIO=1\nPOWER_OFF_ON_HALT=0\nBOOT_ORDER=0xF41\n", "2023-01-11")
	done, why, err := NewEEPROM().Probe(context.Background(), h.Env)
	if !done || err != nil || !strings.Contains(why, "already has BOOT_ORDER=0xf41") || !strings.Contains(why, "2023-01-11") {
		t.Fatalf("Probe = %v, %q, %v", done, why, err)
	}
	if err := NewEEPROM().Run(context.Background(), h.Env); err != nil {
		t.Fatal(err)
	}
	h.assertNothingStaged(t)
}

func TestEEPROMBootloaderTooOld(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// The running bootloader has the order but predates USB boot.
	h := newHandoverEnv(t, "0xf41", "[all]\nBOOT_UART=0\nWAKE_ON_GPIO=1\nPOWER_OFF_ON_HALT=0\nBOOT_ORDER=0xf41\n", "2020-06-15")
	_, _, err := NewEEPROM().Probe(ctx, h.Env)
	for _, want := range []string{"2020-06-15", "older than 2020-09-03", "USB mass storage"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Probe err = %v, want it to say %q", err, want)
		}
	}
	if err := NewEEPROM().Run(ctx, h.Env); err == nil || !strings.Contains(engine.HintOf(err), "rpi-eeprom-update -a") {
		t.Errorf("Run err = %v, hint %q", err, engine.HintOf(err))
	}
	h.assertNothingStaged(t)

	// The OS only has images from before USB boot.
	h = newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2020-04-16")
	for _, rel := range []string{"default", "latest"} {
		os.RemoveAll(h.Path(filepath.Join(bootloaderDir, rel)))
	}
	h.link(t, filepath.Join(rpiEEPROMData(t), "images", "pieeprom-2020-06-15.bin"), filepath.Join(bootloaderDir, "default", "pieeprom-2020-06-15.bin"))
	h.link(t, filepath.Join(rpiEEPROMData(t), "recovery.bin"), filepath.Join(bootloaderDir, "default", "recovery.bin"))
	err = NewEEPROM().Run(ctx, h.Env)
	if err == nil || !strings.Contains(err.Error(), "pieeprom-2020-06-15.bin") || !strings.Contains(err.Error(), "2020-09-03") ||
		!strings.Contains(engine.HintOf(err), "apt-get install rpi-eeprom") {
		t.Errorf("Run err = %v, hint %q", err, engine.HintOf(err))
	}
	h.assertNothingStaged(t)

	// An old running bootloader without the order is fine: the update
	// flashed on the next boot is new, and recovery.bin runs from the ROM.
	h = newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2020-04-16")
	if err := NewEEPROM().Run(ctx, h.Env); err != nil {
		t.Fatal(err)
	}
	h.staged(t)
}

func TestEEPROMNotAPi4(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	h.put(t, deviceTreeCompat, "raspberrypi,5-model-b\x00brcm,bcm2712\x00")
	for _, err := range []error{
		func() error { _, _, err := NewEEPROM().Probe(context.Background(), h.Env); return err }(),
		NewEEPROM().Run(context.Background(), h.Env),
	} {
		if err == nil || !strings.Contains(err.Error(), "brcm,bcm2712") || !strings.Contains(err.Error(), "not a BCM2711") ||
			!strings.Contains(engine.HintOf(err), "Raspberry Pi 4") {
			t.Errorf("err = %v, hint %q", err, engine.HintOf(err))
		}
	}
	h.assertNothingStaged(t)
	if calls := h.run.Calls(); len(calls) != 0 {
		t.Errorf("ran %v on a Pi 5", calls)
	}
}

// Off a Pi (the QEMU run), with no vcgencmd, the image's own config is the
// base, as for a factory EEPROM.
func TestEEPROMNotAPiStagesImageConfig(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", "", "")
	h.put(t, deviceTreeCompat, "linux,dummy-virt\x00")
	h.remove(t, h.Tools.Vcgencmd)
	if err := NewEEPROM().Run(context.Background(), h.Env); err != nil {
		t.Fatal(err)
	}
	upd, _ := h.staged(t)
	im, _ := eeprom.Parse(upd)
	src, err := os.ReadFile(filepath.Join(rpiEEPROMData(t), "images", "pieeprom-2023-01-11.bin"))
	if err != nil {
		t.Fatal(err)
	}
	srcIm, _ := eeprom.Parse(src)
	want, _ := eeprom.SetKeys(srcIm.Config(), eeprom.Setting{Key: "BOOT_ORDER", Value: "0xf41"})
	if !bytes.Equal(im.Config(), want) || !bytes.Contains(want, []byte("WAKE_ON_GPIO=1\n")) {
		t.Errorf("config = %q, want the image's own plus BOOT_ORDER, %q", im.Config(), want)
	}
	if !strings.Contains(h.log(), "not a Raspberry Pi") {
		t.Errorf("log = %s", h.log())
	}
}

func TestEEPROMWriteProtected(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	h.put(t, filepath.Join(h.BootDir, "config.txt"), "[all]\narm_64bit=1\neeprom_write_protect=1\n")
	err := NewEEPROM().Run(context.Background(), h.Env)
	if err == nil || !strings.Contains(err.Error(), "write-protected") || !strings.Contains(err.Error(), "line 3") ||
		!strings.Contains(engine.HintOf(err), "eeprom_write_protect=0") {
		t.Errorf("err = %v, hint %q", err, engine.HintOf(err))
	}
	h.assertNothingStaged(t)
}

// FIRMWARE_RELEASE_STATUS picks the release directory as rpi-eeprom-update
// does, old names included.
func TestEEPROMReleaseStatus(t *testing.T) {
	t.Parallel()
	for conf, want := range map[string]string{
		"":                                       "default/pieeprom-2023-01-11.bin",
		"FIRMWARE_RELEASE_STATUS=\"critical\"\n": "default/pieeprom-2023-01-11.bin",
		"# comment\nFIRMWARE_RELEASE_STATUS=latest\n": "latest/pieeprom-2026-08-04.bin",
		"FIRMWARE_RELEASE_STATUS='stable'\n":          "latest/pieeprom-2026-08-04.bin",
	} {
		h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2022-11-25")
		if conf != "" {
			h.put(t, eepromUpdateConf, conf)
		}
		if err := NewEEPROM().Run(context.Background(), h.Env); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(h.State.HandOver.EEPROM, filepath.Base(want)) {
			t.Errorf("%q: %s, want the image %s", conf, h.State.HandOver.EEPROM, want)
		}
	}
	h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2022-11-25")
	h.put(t, eepromUpdateConf, "FIRMWARE_RELEASE_STATUS=../../etc\n")
	if err := NewEEPROM().Run(context.Background(), h.Env); err == nil || !strings.Contains(err.Error(), "not a release directory") {
		t.Errorf("err = %v", err)
	}
}

// A power cut after each staged file, and one that leaves a half-written
// temporary file: the rerun ends with the card an uninterrupted run gives.
func TestEEPROMPowerCut(t *testing.T) {
	t.Parallel()
	ref := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2022-11-25")
	var points []string
	ref.CrashPoint = func(p string) { points = append(points, p) }
	if err := NewEEPROM().Run(context.Background(), ref.Env); err != nil {
		t.Fatal(err)
	}
	if want := "eeprom: wrote pieeprom.upd,eeprom: wrote pieeprom.sig,eeprom: wrote recovery.bin"; strings.Join(points, ",") != want {
		t.Fatalf("crash points %q", points)
	}
	want := ref.card(t)
	for i, point := range points {
		h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2022-11-25")
		cutAt(t, h.Env, point, func() error { return NewEEPROM().Run(context.Background(), h.Env) })
		if d := diffTrees(want, h.card(t)); len(d) == 0 && i < len(points)-1 {
			t.Errorf("cut at %s: the card is already complete, so the cut was not inside the step", point)
		}
		h.CrashPoint = nil
		if err := NewEEPROM().Run(context.Background(), h.Env); err != nil {
			t.Fatalf("rerun after %s: %v", point, err)
		}
		if d := diffTrees(want, h.card(t)); len(d) > 0 {
			t.Errorf("rerun after a cut at %s: card differs in %v", point, d)
		}
	}
	h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2022-11-25")
	h.put(t, filepath.Join(h.BootDir, ".pieeprom.upd8234091"), "half")
	if err := NewEEPROM().Run(context.Background(), h.Env); err != nil {
		t.Fatal(err)
	}
	if d := diffTrees(want, h.card(t)); len(d) > 0 {
		t.Errorf("after a torn temporary file: card differs in %v", d)
	}
}

// powerCut is the panic value of a simulated power cut.
type powerCut struct{ point string }

// cutAt runs f with a power cut at point and reports it was reached.
func cutAt(t *testing.T, env *engine.Env, point string, f func() error) {
	t.Helper()
	env.CrashPoint = func(p string) {
		if p == point {
			panic(powerCut{p})
		}
	}
	defer func() {
		r := recover()
		if _, ok := r.(powerCut); !ok {
			if r != nil {
				panic(r)
			}
			t.Fatalf("the run never reached %s", point)
		}
	}()
	if err := f(); err != nil {
		t.Fatalf("before the cut at %s: %v", point, err)
	}
}
