package eeprom

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/renameio/v2"

	"github.com/nixpi/nixpi/firstboot/cardpath"
)

// Files the boot ROM and recovery.bin look for in the SD card's FAT root.
const (
	UpdateImageFile = cardpath.EEPROMUpdate
	UpdateSigFile   = cardpath.EEPROMSig
	RecoveryFile    = cardpath.Recovery
)

// StageOptions describe the running machine and the wanted settings.
type StageOptions struct {
	// BootloaderDir holds the release directories default/ and latest/
	// (Raspberry Pi OS: /lib/firmware/raspberrypi/bootloader-2711).
	BootloaderDir string
	// CurrentConfig is the running bootloader's config as
	// `vcgencmd bootloader_config` prints it.
	CurrentConfig []byte
	// CurrentVersion is the running bootloader's build timestamp (the
	// "timestamp" line of `vcgencmd bootloader_version`); 0 if unknown.
	CurrentVersion int64
	// Want are the settings the bootloader must have, e.g. BOOT_ORDER=0xf41.
	Want []Setting
	// TargetDir receives pieeprom.upd, pieeprom.sig and recovery.bin (the SD
	// card's FAT root, e.g. /boot/firmware).
	TargetDir string
	// Now is the update timestamp written to pieeprom.sig; zero means the
	// current time.
	Now time.Time
	// Releases are the release directories of BootloaderDir to take the
	// image from, in order, as FIRMWARE_RELEASE_STATUS selects them; nil
	// means default/, then latest/.
	Releases []string
	// MinVersion refuses, with ErrTooOld, an image built before it (the
	// hand-over needs a bootloader that boots from USB).
	MinVersion int64
	// Wrote, when set, is called after each file is in place (the hand-over
	// step's crash points).
	Wrote func(name string)
	// Check, when set, vets each file read from BootloaderDir (the image,
	// recovery.bin) before anything is staged: the package's md5sums.
	Check func(path string, data []byte) error
}

// ErrTooOld reports a bootloader image older than StageOptions.MinVersion.
var ErrTooOld = errors.New("bootloader image too old")

// Result says what Stage decided and did.
type Result struct {
	// Staged is true when an update is in TargetDir for the next boot
	// (written now or found from an earlier run).
	Staged bool
	// Reason is one line for the journal ("BOOT_ORDER=0xf41 already set").
	Reason string
	// Image is the bootloader image the update is built from, and
	// ImageVersion its build timestamp.
	Image        string
	ImageVersion int64
	// Config is the bootconf.txt the staged image carries.
	Config []byte
	// Written lists the files written now (none when already staged).
	Written []string
}

// Stage decides whether the bootloader needs an update to carry opts.Want and,
// if so, writes pieeprom.upd, pieeprom.sig and recovery.bin into
// opts.TargetDir: the newest image in default/ (latest/ when default/ holds
// nothing as new as the running bootloader) with the current config plus
// opts.Want. The produced image is parsed back and compared with the intended
// config and the source image before anything is written; each file is
// written atomically and only when it differs, recovery.bin (the ROM's
// trigger) last.
func Stage(opts StageOptions) (Result, error) {
	if len(opts.Want) == 0 {
		return Result{}, errors.New("eeprom stage: no settings wanted")
	}
	for _, s := range opts.Want {
		if err := s.Validate(); err != nil {
			return Result{}, fmt.Errorf("eeprom stage: %w", err)
		}
	}
	if hasAll(opts.CurrentConfig, opts.Want) && (opts.CurrentVersion == 0 || opts.CurrentVersion >= opts.MinVersion) {
		return Result{Reason: fmt.Sprintf("bootloader already has %s, nothing to update", settingsString(opts.Want))}, nil
	}

	src, err := pickImage(opts.BootloaderDir, opts.Releases, opts.CurrentVersion)
	if err != nil {
		return Result{}, fmt.Errorf("eeprom stage: %w", err)
	}
	if src.version < opts.MinVersion {
		return Result{}, fmt.Errorf("eeprom stage: the newest image, %q, was built %s, before %s: %w",
			src.path, VersionDate(src.version), VersionDate(opts.MinVersion), ErrTooOld)
	}
	res := Result{Image: src.path, ImageVersion: src.version}

	// Like rpi-eeprom-update: a config of fewer than 3 lines is an empty or
	// factory one (its WAKE_ON_GPIO=0 must not propagate), so the image's own
	// config is the base then.
	base := opts.CurrentConfig
	if bytes.Count(base, []byte("\n")) < 3 {
		base = src.image.Config()
	}
	cfg, err := setAll(base, opts.Want)
	if err != nil {
		return Result{}, fmt.Errorf("eeprom stage: %w", err)
	}
	im := src.image.clone()
	if err := im.SetConfig(cfg); err != nil {
		return Result{}, fmt.Errorf("eeprom stage: %q: %w", src.path, err)
	}
	upd := im.Bytes()
	if err := verifyStaged(src.image, upd, cfg, opts.Want); err != nil {
		return Result{}, fmt.Errorf("eeprom stage: produced image from %q failed its check, nothing written: %w", src.path, err)
	}
	res.Config = cfg

	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	if now.Unix() < 0 {
		return Result{}, fmt.Errorf("eeprom stage: clock says %s, before 1970: set the time", now)
	}
	recoveryPath := filepath.Join(filepath.Dir(src.path), RecoveryFile)
	recovery, err := os.ReadFile(recoveryPath)
	if err != nil {
		return Result{}, fmt.Errorf("eeprom stage: %w: reinstall the rpi-eeprom package", err)
	}
	if opts.Check != nil {
		if err := opts.Check(src.path, src.data); err != nil {
			return Result{}, fmt.Errorf("eeprom stage: %w", err)
		}
		if err := opts.Check(recoveryPath, recovery); err != nil {
			return Result{}, fmt.Errorf("eeprom stage: %w", err)
		}
	}
	files := []struct {
		name string
		data []byte
		same func(old []byte) bool
	}{
		{UpdateImageFile, upd, nil},
		{UpdateSigFile, Digest(upd, now.Unix()), func(old []byte) bool { return SigMatches(old, upd) }},
		{RecoveryFile, recovery, nil},
	}
	for _, f := range files {
		path := filepath.Join(opts.TargetDir, f.name)
		old, err := os.ReadFile(path)
		if err == nil && (bytes.Equal(old, f.data) || f.same != nil && f.same(old)) {
			continue
		}
		if err := renameio.WriteFile(path, f.data, 0o644); err != nil {
			return Result{}, fmt.Errorf("eeprom stage: write %q: %w", path, err)
		}
		res.Written = append(res.Written, path)
		if opts.Wrote != nil {
			opts.Wrote(f.name)
		}
	}
	res.Staged = true
	if len(res.Written) == 0 {
		res.Reason = fmt.Sprintf("update to %s from %s already staged in %s", settingsString(opts.Want), filepath.Base(src.path), opts.TargetDir)
	} else {
		res.Reason = fmt.Sprintf("staged %s from %s in %s; it is flashed on the next boot", settingsString(opts.Want), filepath.Base(src.path), opts.TargetDir)
	}
	return res, nil
}

// ParseBootloaderVersion reads the running bootloader's build timestamp from
// `vcgencmd bootloader_version` output (its "timestamp N" line), for
// StageOptions.CurrentVersion. Old firmware reports 0: unknown.
func ParseBootloaderVersion(out []byte) (int64, error) {
	for _, l := range splitLines(out) {
		if v, ok := bytes.CutPrefix(bytes.TrimSpace(l), []byte("timestamp ")); ok {
			ts, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil || ts < 0 {
				return 0, fmt.Errorf("bootloader version: bad timestamp line %q", bytes.TrimSpace(l))
			}
			return ts, nil
		}
	}
	return 0, fmt.Errorf("bootloader version: no timestamp line in %q: is this a Pi 4 with current firmware?", out)
}

// setAll applies want to config; BOOT_ORDER is written exactly once.
func setAll(config []byte, want []Setting) ([]byte, error) {
	var err error
	for _, s := range want {
		if s.Key == "BOOT_ORDER" {
			config, err = SetBootOrder(config, s.Value)
		} else {
			config, err = SetKeys(config, s)
		}
		if err != nil {
			return nil, err
		}
	}
	return config, nil
}

func hasAll(config []byte, want []Setting) bool {
	for _, s := range want {
		if !Has(config, s) {
			return false
		}
	}
	return true
}

func settingsString(ss []Setting) string {
	var b bytes.Buffer
	for i, s := range ss {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s.String())
	}
	return b.String()
}

// SigMatches reports whether an existing .sig is for image and has the ts
// line the bootloader needs; then it is kept, so staging again is a no-op.
func SigMatches(sig, image []byte) bool {
	want := Digest(image, 0)
	digestLine := want[:bytes.IndexByte(want, '\n')+1]
	return bytes.HasPrefix(sig, digestLine) && bytes.HasPrefix(sig[len(digestLine):], []byte("ts: "))
}

// verifyStaged parses the produced image back and checks it carries exactly
// cfg, has every wanted setting, and differs from the source image only inside
// bootconf.txt's section and the erased bytes after it.
func verifyStaged(src *Image, out, cfg []byte, want []Setting) error {
	got, err := Parse(out)
	if err != nil {
		return err
	}
	if !bytes.Equal(got.Config(), cfg) {
		return errors.New("config read back differs from the config written")
	}
	if !hasAll(got.Config(), want) {
		return fmt.Errorf("config read back lacks %s", settingsString(want))
	}
	i, err := src.fileIndex(BootconfTxt)
	if err != nil {
		return err
	}
	start, end := src.sections[i].Offset, ImageSize-eraseSector
	for _, s := range src.sections[i+1:] {
		if s.Magic != MagicPadding {
			end = s.Offset
			break
		}
	}
	if !bytes.Equal(src.buf[:start], out[:start]) || !bytes.Equal(src.buf[end:], out[end:]) {
		return fmt.Errorf("bytes outside bootconf.txt's region [%d, %d) changed", start, end)
	}
	return nil
}

var imageName = regexp.MustCompile(`^pieeprom-[0-9]{4}-[0-9]{2}-[0-9]{2}\.bin$`)

type sourceImage struct {
	path    string
	version int64
	image   *Image
	data    []byte // the file as read
}

// VersionDate is a bootloader build timestamp as its release is named,
// "2020-09-03" (UTC).
func VersionDate(ts int64) string { return time.Unix(ts, 0).UTC().Format("2006-01-02") }

// pickImage returns the newest image of the first release directory whose
// newest image is not older than the running bootloader (current).
func pickImage(dir string, releases []string, current int64) (sourceImage, error) {
	if len(releases) == 0 {
		releases = []string{"default", "latest"}
	}
	var older []string
	for _, release := range releases {
		rdir := filepath.Join(dir, release)
		path, err := newestImage(rdir)
		if err != nil {
			return sourceImage{}, err
		}
		if path == "" {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return sourceImage{}, err
		}
		im, err := Parse(data)
		if err != nil {
			return sourceImage{}, fmt.Errorf("%q: %w", path, err)
		}
		ts, ok := im.BuildTimestamp()
		if !ok {
			return sourceImage{}, fmt.Errorf("%q has no BUILD_TIMESTAMP: reinstall the rpi-eeprom package", path)
		}
		if ts >= current {
			return sourceImage{path: path, version: ts, image: im, data: data}, nil
		}
		older = append(older, fmt.Sprintf("%q (build %d)", path, ts))
	}
	if len(older) == 0 {
		dirs := make([]string, len(releases))
		for i, r := range releases {
			dirs[i] = strconv.Quote(filepath.Join(dir, r))
		}
		return sourceImage{}, fmt.Errorf("no pieeprom-YYYY-MM-DD.bin in %s: install the rpi-eeprom package", strings.Join(dirs, " or "))
	}
	return sourceImage{}, fmt.Errorf("every bootloader image is older than the running bootloader (build %d): %v; update the rpi-eeprom package (apt-get install rpi-eeprom) so nixpi does not downgrade it", current, older)
}

// newestImage returns the newest pieeprom-YYYY-MM-DD.bin of the Pi 4 size in
// dir, "" if there is none or dir does not exist.
func newestImage(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var names []string
	for _, e := range entries {
		if !imageName.MatchString(e.Name()) {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil || !fi.Mode().IsRegular() || fi.Size() != ImageSize {
			continue
		}
		names = append(names, e.Name())
	}
	if len(names) == 0 {
		return "", nil
	}
	return filepath.Join(dir, slices.Max(names)), nil
}
