package eeprom

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// bootloaderDir lays out a Raspberry Pi OS bootloader-2711 directory with
// real images: default/ holds the given releases, latest/ the others.
func bootloaderDir(t *testing.T, defaults, latest []string) string {
	t.Helper()
	real := realData(t)
	dir := t.TempDir()
	for release, dates := range map[string][]string{"default": defaults, "latest": latest} {
		rdir := filepath.Join(dir, release)
		if err := os.MkdirAll(rdir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, d := range dates {
			if err := os.Symlink(filepath.Join(real, "images", "pieeprom-"+d+".bin"), filepath.Join(rdir, "pieeprom-"+d+".bin")); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink(filepath.Join(real, "recovery.bin"), filepath.Join(rdir, "recovery.bin")); err != nil {
			t.Fatal(err)
		}
		// Not candidates: wrong name or size.
		writeFile(t, filepath.Join(rdir, "pieeprom-2099-01-01.bin"), []byte("too small"))
		writeFile(t, filepath.Join(rdir, "vl805-000138c0.bin"), make([]byte, ImageSize))
	}
	return dir
}

func buildTS(t *testing.T, date string) int64 {
	t.Helper()
	im, _ := parseFile(t, filepath.Join(realData(t), "images", "pieeprom-"+date+".bin"))
	ts, ok := im.BuildTimestamp()
	if !ok {
		t.Fatal("no build timestamp")
	}
	return ts
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

var bootOrderF41 = []Setting{{"BOOT_ORDER", "0xf41"}}

// The running bootloader (2022-11-25, custom HDMI_DELAY) gets the newest
// default image with its settings kept and BOOT_ORDER added.
func TestStageWritesUpdate(t *testing.T) {
	t.Parallel()
	bl := bootloaderDir(t, []string{"2022-11-25", "2023-01-11"}, []string{"2026-08-04"})
	target := t.TempDir()
	writeFile(t, filepath.Join(target, "config.txt"), []byte("arm_64bit=1\n"))
	current := []byte("[all]\nBOOT_UART=0\nWAKE_ON_GPIO=1\nPOWER_OFF_ON_HALT=0\nHDMI_DELAY=0\n")
	now := time.Unix(1790000000, 0)
	opts := StageOptions{
		BootloaderDir:  bl,
		CurrentConfig:  current,
		CurrentVersion: buildTS(t, "2022-11-25"),
		Want:           bootOrderF41,
		TargetDir:      target,
		Now:            now,
	}
	res, err := Stage(opts)
	if err != nil {
		t.Fatal(err)
	}
	wantCfg := "[all]\nBOOT_UART=0\nWAKE_ON_GPIO=1\nPOWER_OFF_ON_HALT=0\nHDMI_DELAY=0\nBOOT_ORDER=0xf41\n"
	if !res.Staged || string(res.Config) != wantCfg || filepath.Base(res.Image) != "pieeprom-2023-01-11.bin" || len(res.Written) != 3 {
		t.Fatalf("Stage = %+v", res)
	}
	if res.ImageVersion != buildTS(t, "2023-01-11") {
		t.Errorf("ImageVersion = %d", res.ImageVersion)
	}

	upd := readFile(t, filepath.Join(target, UpdateImageFile))
	im, err := Parse(upd)
	if err != nil {
		t.Fatalf("staged pieeprom.upd does not parse: %v", err)
	}
	if string(im.Config()) != wantCfg {
		t.Errorf("staged config = %q", im.Config())
	}
	// Byte-identical to the source image with the config replaced.
	src, _ := parseFile(t, filepath.Join(realData(t), "images", "pieeprom-2023-01-11.bin"))
	if err := src.SetConfig([]byte(wantCfg)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(src.Bytes(), upd) {
		t.Error("pieeprom.upd is not the source image with only the config replaced")
	}
	sig := readFile(t, filepath.Join(target, UpdateSigFile))
	if !bytes.Equal(sig, Digest(upd, now.Unix())) || !bytes.Contains(sig, []byte("\nts: 1790000000\n")) {
		t.Errorf("pieeprom.sig = %q", sig)
	}
	if !bytes.Equal(readFile(t, filepath.Join(target, RecoveryFile)), readFile(t, filepath.Join(realData(t), "recovery.bin"))) {
		t.Error("recovery.bin is not the release's recovery.bin")
	}
	if got := strings.Join(dirNames(t, target), " "); got != "config.txt pieeprom.sig pieeprom.upd recovery.bin" {
		t.Errorf("target holds %s (temp files left?)", got)
	}

	// Staging again (a reboot before the flash) changes nothing, not even the
	// .sig's timestamp.
	opts.Now = now.Add(time.Hour)
	again, err := Stage(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Staged || len(again.Written) != 0 || !strings.Contains(again.Reason, "already staged") {
		t.Errorf("second Stage = %+v", again)
	}
	if !bytes.Equal(readFile(t, filepath.Join(target, UpdateSigFile)), sig) {
		t.Error("second Stage rewrote pieeprom.sig")
	}

	// A power cut before recovery.bin was written: only it is written now.
	if err := os.Remove(filepath.Join(target, RecoveryFile)); err != nil {
		t.Fatal(err)
	}
	resumed, err := Stage(opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(resumed.Written) != 1 || filepath.Base(resumed.Written[0]) != RecoveryFile {
		t.Errorf("resumed Stage wrote %v", resumed.Written)
	}

	// A torn .sig (no ts line) is rewritten.
	writeFile(t, filepath.Join(target, UpdateSigFile), sig[:64])
	torn, err := Stage(opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(torn.Written) != 1 || filepath.Base(torn.Written[0]) != UpdateSigFile {
		t.Errorf("Stage after a torn .sig wrote %v", torn.Written)
	}
}

func TestStageNothingToDo(t *testing.T) {
	t.Parallel()
	target := t.TempDir()
	for _, cfg := range []string{
		"[all]\nBOOT_UART=0\nBOOT_ORDER=0xf41\n",
		"[all]\nBOOT_ORDER=0xF41\nWAKE_ON_GPIO=1\n",
	} {
		// BootloaderDir does not exist: nothing may be looked at.
		res, err := Stage(StageOptions{BootloaderDir: "/nonexistent", CurrentConfig: []byte(cfg), Want: bootOrderF41, TargetDir: target})
		if err != nil {
			t.Fatal(err)
		}
		if res.Staged || len(res.Written) != 0 || !strings.Contains(res.Reason, "already has BOOT_ORDER=0xf41") {
			t.Errorf("Stage(%q) = %+v", cfg, res)
		}
	}
	if names := dirNames(t, target); len(names) != 0 {
		t.Errorf("target holds %v", names)
	}
}

// A running bootloader newer than default/ takes the image from latest/.
func TestStageFallsBackToLatest(t *testing.T) {
	t.Parallel()
	bl := bootloaderDir(t, []string{"2023-01-11"}, []string{"2026-05-17", "2026-08-04"})
	res, err := Stage(StageOptions{
		BootloaderDir:  bl,
		CurrentConfig:  readFile(t, filepath.Join(realData(t), "configs", "bootconf-2022-11-25.txt")),
		CurrentVersion: buildTS(t, "2026-05-17"),
		Want:           bootOrderF41,
		TargetDir:      t.TempDir(),
		Now:            time.Unix(1790000000, 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(res.Image) != "pieeprom-2026-08-04.bin" || filepath.Base(filepath.Dir(res.Image)) != "latest" {
		t.Errorf("picked %s", res.Image)
	}
}

// A config of fewer than 3 lines (empty or factory) is replaced by the
// image's own config, as rpi-eeprom-update does.
func TestStageShortConfigUsesImageConfig(t *testing.T) {
	t.Parallel()
	bl := bootloaderDir(t, []string{"2026-08-04"}, nil)
	target := t.TempDir()
	before := time.Now().Unix()
	res, err := Stage(StageOptions{
		BootloaderDir: bl,
		CurrentConfig: []byte("[all]\nWAKE_ON_GPIO=0\n"),
		Want:          bootOrderF41,
		TargetDir:     target,
	})
	if err != nil {
		t.Fatal(err)
	}
	golden := readFile(t, filepath.Join(ourData(t), "bootconf-2026-08-04-boot-order.txt"))
	if !bytes.Equal(res.Config, golden) {
		t.Errorf("config = %q, want %q", res.Config, golden)
	}
	// No Now given: the .sig carries the current time.
	sig := string(readFile(t, filepath.Join(target, UpdateSigFile)))
	_, tsLine, _ := strings.Cut(sig, "\n")
	ts, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(tsLine, "ts: "), "\n"), 10, 64)
	if err != nil || ts < before || ts > time.Now().Unix() {
		t.Errorf("pieeprom.sig = %q, want the current time", sig)
	}
}

func TestStageRefuses(t *testing.T) {
	t.Parallel()
	real := realData(t)
	shipped := readFile(t, filepath.Join(real, "configs", "bootconf-2022-11-25.txt"))
	// Exactly the limit, so adding BOOT_ORDER cannot fit.
	big := append(bytes.Clone(shipped), '#')
	big = append(append(big, bytes.Repeat([]byte("x"), MaxFileSize-len(big)-1)...), '\n')
	if len(big) > MaxFileSize || len(big)+len("BOOT_ORDER=0xf41\n") <= MaxFileSize {
		t.Fatalf("test config is %d bytes: it must fit alone and not with BOOT_ORDER", len(big))
	}
	corrupt := t.TempDir()
	if err := os.MkdirAll(filepath.Join(corrupt, "default"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(corrupt, "default", "pieeprom-2023-01-11.bin"), make([]byte, ImageSize))
	noRecovery := bootloaderDir(t, []string{"2023-01-11"}, nil)
	if err := os.Remove(filepath.Join(noRecovery, "default", "recovery.bin")); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		opts StageOptions
		want string
	}{
		{"all images older", StageOptions{
			BootloaderDir: bootloaderDir(t, []string{"2022-11-25"}, []string{"2023-01-11"}), CurrentConfig: shipped,
			CurrentVersion: buildTS(t, "2026-08-04"), Want: bootOrderF41}, "older than the running bootloader"},
		{"no images", StageOptions{BootloaderDir: t.TempDir(), CurrentConfig: shipped, Want: bootOrderF41}, "install the rpi-eeprom package"},
		{"config too large", StageOptions{BootloaderDir: bootloaderDir(t, []string{"2023-01-11"}, nil),
			CurrentConfig: big, Want: bootOrderF41}, "at most 4076 fit"},
		{"bad boot order", StageOptions{BootloaderDir: "/nonexistent", CurrentConfig: shipped,
			Want: []Setting{{"BOOT_ORDER", "0x9"}}}, "not a Pi 4 boot mode"},
		{"nothing wanted", StageOptions{BootloaderDir: "/nonexistent", CurrentConfig: shipped}, "no settings"},
		{"corrupt image", StageOptions{BootloaderDir: corrupt, CurrentConfig: shipped, Want: bootOrderF41}, "no bootconf.txt"},
		{"no recovery.bin", StageOptions{BootloaderDir: noRecovery, CurrentConfig: shipped, Want: bootOrderF41}, "recovery.bin"},
	}
	for _, c := range cases {
		target := t.TempDir()
		c.opts.TargetDir = target
		_, err := Stage(c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one containing %q", c.name, err, c.want)
		}
		if names := dirNames(t, target); len(names) != 0 {
			t.Errorf("%s: target holds %v after the error", c.name, names)
		}
	}
}

// A read-only target fails with the path in the error and leaves nothing.
func TestStageUnwritableTarget(t *testing.T) {
	t.Parallel()
	bl := bootloaderDir(t, []string{"2023-01-11"}, nil)
	target := filepath.Join(t.TempDir(), "missing")
	_, err := Stage(StageOptions{BootloaderDir: bl, CurrentConfig: []byte("[all]\nBOOT_UART=0\nWAKE_ON_GPIO=1\n"),
		Want: bootOrderF41, TargetDir: target})
	if err == nil || !strings.Contains(err.Error(), `"`+filepath.Join(target, UpdateImageFile)+`"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestParseBootloaderVersion(t *testing.T) {
	t.Parallel()
	out := []byte("2023/01/11 17:40:52\nversion 8ba17717fbcedd4c3b6d4bce7e50c7af4155cba9 (release)\ntimestamp 1673458852\nupdate-time 1674039423\ncapabilities 0x0000007f\n")
	if ts, err := ParseBootloaderVersion(out); err != nil || ts != 1673458852 {
		t.Fatalf("ParseBootloaderVersion = %d, %v", ts, err)
	}
	for _, bad := range []string{"", "2019/07/15 12:00:00\nversion abc\n", "timestamp soon\n"} {
		if _, err := ParseBootloaderVersion([]byte(bad)); err == nil {
			t.Errorf("ParseBootloaderVersion(%q) accepted it", bad)
		}
	}
}
