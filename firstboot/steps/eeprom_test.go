package steps

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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

	// Staged is not done: only the running bootloader counts. A rerun
	// writes nothing (the .sig keeps its timestamp).
	done, why, err = step.Probe(ctx, h.Env)
	if done || err != nil || !strings.Contains(why, "does not have") {
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

	// The running bootloader has the order but predates USB boot and
	// tryboot: it is updated as one without the order.
	h := newHandoverEnv(t, "0xf41", "[all]\nBOOT_UART=0\nWAKE_ON_GPIO=1\nPOWER_OFF_ON_HALT=0\nBOOT_ORDER=0xf41\n", "2020-06-15")
	done, why, err := NewEEPROM().Probe(ctx, h.Env)
	if done || err != nil || !strings.Contains(why, "2020-06-15") || !strings.Contains(why, "older than 2020-12-11") {
		t.Errorf("Probe = %v, %q, %v", done, why, err)
	}
	if err := NewEEPROM().Run(ctx, h.Env); err != nil {
		t.Fatal(err)
	}
	if upd, _ := h.staged(t); !bytes.Contains(upd, []byte("BOOT_ORDER=0xf41")) {
		t.Error("the update lacks the order")
	}

	// The OS only has images from before USB boot.
	h = newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2020-04-16")
	for _, rel := range []string{"default", "latest"} {
		os.RemoveAll(h.Path(filepath.Join(bootloaderDir, rel)))
	}
	h.link(t, filepath.Join(rpiEEPROMData(t), "images", "pieeprom-2020-06-15.bin"), filepath.Join(bootloaderDir, "default", "pieeprom-2020-06-15.bin"))
	h.link(t, filepath.Join(rpiEEPROMData(t), "recovery.bin"), filepath.Join(bootloaderDir, "default", "recovery.bin"))
	err = NewEEPROM().Run(ctx, h.Env)
	if err == nil || !strings.Contains(err.Error(), "pieeprom-2020-06-15.bin") || !strings.Contains(err.Error(), "2020-12-11") ||
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

// Off a Pi, with no vcgencmd, there is no bootloader to set: nothing is
// staged and nothing waits for a reboot. (The QEMU harness plays the
// bootloader with a vcgencmd of its own.)
func TestEEPROMNotAPiNoBootloader(t *testing.T) {
	t.Parallel()
	h := newHandoverEnv(t, "0xf41", "", "")
	h.put(t, deviceTreeCompat, "linux,dummy-virt\x00")
	h.remove(t, h.Tools.Vcgencmd)
	done, why, err := NewEEPROM().Probe(context.Background(), h.Env)
	if !done || err != nil || !strings.Contains(why, "no bootloader EEPROM") {
		t.Fatalf("Probe = %v, %q, %v", done, why, err)
	}
	if err := NewEEPROM().Run(context.Background(), h.Env); err != nil {
		t.Fatal(err)
	}
	h.assertNothingStaged(t)
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

// eeprom_write_protect counts wherever it may take effect on a Pi 4: in a
// file config.txt includes, under [pi4] or a conditional filter; not
// under [pi5] or [none].
func TestEEPROMWriteProtectSections(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		configTxt, extra string
		protected        bool
	}{
		"in an included file":  {"[all]\narm_64bit=1\ninclude extra.txt\n", "eeprom_write_protect=1\n", true},
		"under [pi4]":          {"[pi4]\neeprom_write_protect=1\n[all]\n", "", true},
		"under a gpio filter":  {"[gpio4=1]\neeprom_write_protect=1\n[all]\n", "", true},
		"under [pi5]":          {"[pi5]\neeprom_write_protect=1\n[all]\narm_64bit=1\n", "", false},
		"under [none]":         {"[none]\neeprom_write_protect=1\n[all]\n", "", false},
		"include under [pi5]":  {"[pi5]\ninclude extra.txt\n[all]\n", "eeprom_write_protect=1\n", false},
		"an include of itself": {"include config.txt\n", "", false},
		"set to 0":             {"[all]\neeprom_write_protect=0\n", "", false},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
			h.put(t, filepath.Join(h.BootDir, "config.txt"), tc.configTxt)
			if tc.extra != "" {
				h.put(t, filepath.Join(h.BootDir, "extra.txt"), tc.extra)
			}
			err := NewEEPROM().Run(context.Background(), h.Env)
			if tc.protected {
				if err == nil || !strings.Contains(err.Error(), "write-protected") {
					t.Fatalf("err = %v, want a write-protect refusal", err)
				}
				h.assertNothingStaged(t)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			h.staged(t)
		})
	}
}

// Before it is staged, an image is checked against the rpi-eeprom
// package's md5sums: a changed file on the card is never flashed.
func TestEEPROMChecksPackageMD5sums(t *testing.T) {
	t.Parallel()
	md5sums := func(t *testing.T, h *handoverEnv, tamper string) {
		var b strings.Builder
		for _, rel := range []string{"default/pieeprom-2022-11-25.bin", "default/pieeprom-2023-01-11.bin", "default/recovery.bin", "latest/pieeprom-2026-08-04.bin", "latest/recovery.bin"} {
			name := strings.TrimPrefix(filepath.Join(bootloaderDir, rel), "/")
			data, err := os.ReadFile(h.Path("/" + name))
			if err != nil {
				t.Fatal(err)
			}
			sum := md5.Sum(data)
			if rel == tamper {
				sum[0] ^= 0xff
			}
			fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(sum[:]), name)
		}
		h.put(t, eepromMD5sums, b.String())
	}
	h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
	md5sums(t, h, "")
	if err := NewEEPROM().Run(context.Background(), h.Env); err != nil {
		t.Fatal(err)
	}
	h.staged(t)

	for _, tamper := range []string{"default/pieeprom-2023-01-11.bin", "default/recovery.bin"} {
		h := newHandoverEnv(t, "0xf41", shippedBootloaderConfig, "2023-01-11")
		md5sums(t, h, tamper)
		err := NewEEPROM().Run(context.Background(), h.Env)
		if err == nil || !strings.Contains(err.Error(), "differs from what the rpi-eeprom package installed") || !strings.Contains(engine.HintOf(err), "--reinstall rpi-eeprom") {
			t.Errorf("%s changed: err = %v", tamper, err)
		}
		h.assertNothingStaged(t)
	}
}
