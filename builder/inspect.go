package builder

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/retire"
)

// Inspection is what `nixpi inspect` shows of an image or card. Nothing in
// it carries a secret: the config is the redacted one.
type Inspection struct {
	Path       string         `json:"path"`
	Size       int64          `json:"size"`
	Table      string         `json:"partition_table"`
	DiskID     string         `json:"disk_id,omitempty"`
	Partitions []PartitionRow `json:"partitions"`
	FAT        *FATReport     `json:"fat,omitempty"`
	// Problems are things inspect could not read; the rest is still shown.
	Problems []string `json:"problems,omitempty"`
}

// PartitionRow is one partition table entry.
type PartitionRow struct {
	Index    int    `json:"index"`
	Type     string `json:"type"` // "0x0c"
	TypeName string `json:"type_name"`
	Bootable bool   `json:"bootable"`
	Start    int64  `json:"start"`
	Size     int64  `json:"size"`
}

// FATReport is the boot partition and what nixpi put there.
type FATReport struct {
	Label     string   `json:"label"`
	Size      int64    `json:"size"`
	Free      int64    `json:"free"`
	BootFiles []string `json:"boot_files"`
	Cmdline   string   `json:"cmdline,omitempty"`
	// HookPresent says whether cmdline.txt carries nixpi's first-boot hook.
	HookPresent bool `json:"hook_present"`
	// Arm64 is config.txt's effective arm_64bit for a Pi 4, set on line
	// Arm64Line (0: not set).
	Arm64       bool     `json:"arm_64bit"`
	Arm64Line   int      `json:"arm_64bit_line,omitempty"`
	NixpiFiles  []string `json:"nixpi_files,omitempty"`
	Config      string   `json:"config,omitempty"` // redacted TOML
	ConfigError string   `json:"config_error,omitempty"`
	// CarriesSecrets says the config holds a secret (shown redacted).
	CarriesSecrets bool            `json:"carries_secrets,omitempty"`
	Manifest       *Manifest       `json:"manifest,omitempty"`
	Journal        *JournalSummary `json:"journal,omitempty"`
	// Retired is the hand-over's manifest when it retired the card's boot
	// files; Staged the EEPROM update files at the root, and StagedConfig
	// the bootloader config pieeprom.upd carries.
	Retired      *retire.Manifest `json:"retired,omitempty"`
	Staged       []string         `json:"staged,omitempty"`
	StagedConfig string           `json:"staged_config,omitempty"`
}

// JournalSummary is the device's install journal in short.
type JournalSummary struct {
	Entries int `json:"entries"`
	Skipped int `json:"skipped_lines"`
	// Newer counts lines a later journal version wrote.
	Newer int `json:"newer_lines,omitempty"`
	// TooLong says which lines were over journal.MaxLine, skipped.
	TooLong []string `json:"too_long_lines,omitempty"`
	Boots   int      `json:"boots"`
	// Steps is each step's latest event, in the order steps first appear.
	Steps []StepStatus `json:"steps"`
	// Last is the most recent entry, formatted for people.
	Last string `json:"last,omitempty"`
}

// StepStatus is one step's latest journal event.
type StepStatus struct {
	Step  string `json:"step"`
	Event string `json:"event"`
	Msg   string `json:"msg,omitempty"`
	Hint  string `json:"hint,omitempty"`
}

// Inspect reads an image or card read-only (OpenCard). It fails only when
// the file is not a disk image at all; what it cannot make sense of goes
// into Problems, among them what keeps the card from booting.
func Inspect(imagePath string) (*Inspection, error) {
	card, err := OpenCard(imagePath)
	if err != nil {
		return nil, err
	}
	defer card.Close()
	table := card.Table
	in := &Inspection{Path: imagePath, Size: card.Size}
	in.Table = "mbr"
	if in.DiskID = fmt.Sprintf("%08x", table.DiskID); table.GPT {
		in.Table, in.DiskID = "gpt", "" // the GPT header holds the disk GUID; bytes 440-443 mean nothing
	}
	for _, p := range table.Partitions {
		in.Partitions = append(in.Partitions, PartitionRow{p.Index, fmt.Sprintf("0x%02x", p.Type), partitionTypeName(p.Type), p.Bootable, p.Start, p.Size})
	}
	if table.GPT {
		in.Problems = append(in.Problems, card.FATErr.Error())
		return in, nil
	}
	if card.FAT == nil {
		in.Problems = append(in.Problems, card.BootProblems(false)...)
		return in, nil
	}
	in.FAT, err = inspectFAT(card)
	if err != nil {
		in.Problems = append(in.Problems, err.Error())
	}
	in.Problems = append(in.Problems, card.BootProblems(in.FAT != nil && in.FAT.Retired != nil)...)
	return in, nil
}

// partitionTypeName names the MBR partition types nixpi meets.
func partitionTypeName(t byte) string {
	switch t {
	case 0x0b:
		return "FAT32 (CHS)"
	case 0x0c:
		return "FAT32 (LBA)"
	case 0x0e:
		return "FAT16 (LBA)"
	case 0x06:
		return "FAT16"
	case 0xef:
		return "EFI System"
	case 0x83:
		return "Linux"
	case 0x82:
		return "Linux swap"
	case 0xee:
		return "GPT protective"
	case 0x05, 0x0f:
		return "extended"
	}
	return "unknown"
}

func inspectFAT(card *Card) (*FATReport, error) {
	fsys := card.FAT
	free, err := fsys.FreeBytes()
	if err != nil {
		return nil, fmt.Errorf("partition 1: %w", err)
	}
	r := &FATReport{Label: fsys.Label(), Size: card.Boot.Size, Free: free}
	var problems []string
	problem := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	root, err := fsys.List(".")
	if err != nil {
		return nil, fmt.Errorf("partition 1: %w", err)
	}
	for _, e := range root {
		name := e.Name
		if e.IsDir {
			name += "/"
		}
		r.BootFiles = append(r.BootFiles, name)
	}

	readFile := func(p string) ([]byte, bool) {
		if !fsys.Exists(p) {
			return nil, false
		}
		b, err := card.ReadFile(p)
		if err != nil {
			problem("%v", err)
			return nil, false
		}
		return b, true
	}
	if m, err := retire.ReadManifest(NewFATCard(fsys, time.Time{})); err == nil {
		r.Retired = m
	} else if !errors.Is(err, retire.ErrNotRetired) {
		problem("%v", err)
	}
	// A retired card's cmdline.txt and config.txt are in nixpi/retired/.
	bootFile := func(name string) string {
		if r.Retired != nil && !fsys.Exists(name) {
			return path.Join(cardpath.Retired, name)
		}
		return name
	}
	for _, name := range []string{cardpath.EEPROMUpdate, cardpath.EEPROMSig, cardpath.Recovery, cardpath.RecoveryDone} {
		if fsys.Exists(name) {
			r.Staged = append(r.Staged, name)
		}
	}
	if b, ok := readFile(cardpath.EEPROMUpdate); ok {
		if im, err := eeprom.Parse(b); err != nil {
			problem("%s: %v", cardpath.EEPROMUpdate, err)
		} else {
			r.StagedConfig = string(im.Config())
		}
	}
	if b, ok := readFile(bootFile(cardpath.Cmdline)); ok {
		r.Cmdline = strings.TrimRight(string(b), "\r\n")
	} else if r.Retired != nil {
		problem("no cmdline.txt at the FAT's root or in %s", cardpath.Retired)
	}
	if b, ok := readFile(bootFile(cardpath.ConfigTxt)); ok {
		r.Arm64, r.Arm64Line = bootfiles.Arm64Effective(string(b))
	} else if r.Retired != nil {
		problem("no config.txt at the FAT's root or in %s", cardpath.Retired)
	}

	if entries, err := fsys.List(cardpath.Dir); err == nil {
		for _, e := range entries {
			r.NixpiFiles = append(r.NixpiFiles, path.Join(cardpath.Dir, e.Name))
		}
	}
	if b, ok := readFile(cardpath.Config); ok {
		r.Config, r.CarriesSecrets, r.ConfigError = redactedConfig(b)
	}
	if b, ok := readFile(cardpath.Manifest); ok {
		if m, err := ParseManifest(b); err != nil {
			problem("%s: %v", cardpath.Manifest, err)
		} else {
			r.Manifest = m
		}
	}
	r.HookPresent = cmdlineHasHook(r.Cmdline, r.Manifest)
	if card.HasJournal() {
		j, err := card.Journal()
		if err != nil {
			problem("%s: %v", cardpath.Journal, err)
		} else {
			r.Journal = summarizeJournal(j)
		}
	}
	if len(problems) > 0 {
		return r, errors.New(strings.Join(problems, "; "))
	}
	return r, nil
}

// cmdlineHasHook says whether cmdline carries nixpi's hook for where the
// manifest says the image mounts its FAT. Without a manifest, either place
// Raspberry Pi OS mounts it (Bookworm and later, then before) will do.
func cmdlineHasHook(cmdline string, m *Manifest) bool {
	dirs := []string{"/boot/firmware", "/boot"}
	if m != nil && m.Base.BootDir != "" {
		dirs = []string{m.Base.BootDir}
	}
	for _, dir := range dirs {
		if bootfiles.HasHook(cmdline, bootfiles.HookWords(dir)) {
			return true
		}
	}
	return false
}

// redactedConfig parses the card's nixpi.toml and renders it without
// secrets. A file that does not parse is not shown (it may hold secrets in a
// shape the redaction does not know); its error is.
func redactedConfig(data []byte) (shown string, secret bool, problem string) {
	cfg, err := config.Parse(cardpath.Config, data)
	if err != nil {
		return "", false, err.Error()
	}
	out, err := config.Encode(cfg.Redacted())
	if err != nil {
		return "", false, err.Error()
	}
	return string(out), carriesSecret(cfg), ""
}

func summarizeJournal(j *journal.Journal) *JournalSummary {
	s := &JournalSummary{Entries: len(j.Entries), Skipped: j.Skipped, Newer: j.Newer}
	for _, n := range j.TooLong {
		s.TooLong = append(s.TooLong, journal.TooLongLine(n))
	}
	seen := map[string]int{}
	boots := map[int]bool{}
	for _, e := range j.Entries {
		boots[e.Boot] = true
		st := StepStatus{Step: e.Step, Event: string(e.Event), Msg: e.Msg, Hint: e.Hint}
		if i, ok := seen[e.Step]; ok {
			s.Steps[i] = st
			continue
		}
		seen[e.Step] = len(s.Steps)
		s.Steps = append(s.Steps, st)
	}
	s.Boots = len(boots)
	if n := len(j.Entries); n > 0 {
		s.Last = journal.FormatEntry(j.Entries[n-1])
	}
	return s
}
