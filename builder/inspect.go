package builder

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/builder/fatfs"
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
	Boots int `json:"boots"`
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

// Inspect reads an image or card read-only. It fails only when the file
// cannot be read at all; what it cannot make sense of goes into Problems.
func Inspect(imagePath string) (*Inspection, error) {
	f, err := os.Open(imagePath)
	if err != nil {
		return nil, fmt.Errorf("open image: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%q is a directory, not an image", imagePath)
	}
	size := st.Size()
	if !st.Mode().IsRegular() {
		if size, err = f.Seek(0, 2); err != nil {
			return nil, fmt.Errorf("size of %q: %w", imagePath, err)
		}
	}
	in := &Inspection{Path: imagePath, Size: size}
	table, err := baseimage.ReadTable(f)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", imagePath, err)
	}
	in.Table = "mbr"
	if in.DiskID = fmt.Sprintf("%08x", table.DiskID); table.GPT {
		in.Table, in.DiskID = "gpt", "" // the GPT header holds the disk GUID; bytes 440-443 mean nothing
	}
	for _, p := range table.Partitions {
		in.Partitions = append(in.Partitions, PartitionRow{p.Index, fmt.Sprintf("0x%02x", p.Type), partitionTypeName(p.Type), p.Bootable, p.Start, p.Size})
	}
	if table.GPT {
		in.Problems = append(in.Problems, "GPT partition table: Raspberry Pi OS images use MBR; the FAT partition is not examined")
		return in, nil
	}
	p1, ok := table.Partition(1)
	if !ok || !baseimage.IsFAT(p1.Type) {
		in.Problems = append(in.Problems, "partition 1 is not a FAT partition (type 0x0b, 0x0c or 0xef)")
		return in, nil
	}
	if p1.End() > size {
		in.Problems = append(in.Problems, fmt.Sprintf("partition 1 ends at byte %d, past the end of the image (%d bytes): the image is truncated", p1.End(), size))
		return in, nil
	}
	in.FAT, err = inspectFAT(f, p1)
	if err != nil {
		in.Problems = append(in.Problems, err.Error())
	}
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

func inspectFAT(f *os.File, p1 baseimage.Partition) (*FATReport, error) {
	fsys, err := fatfs.OpenReadOnly(f, p1.Start, p1.Size)
	if err != nil {
		return nil, fmt.Errorf("partition 1: %w", err)
	}
	free, err := fsys.FreeBytes()
	if err != nil {
		return nil, fmt.Errorf("partition 1: %w", err)
	}
	r := &FATReport{Label: fsys.Label(), Size: p1.Size, Free: free}
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
		b, err := fsys.ReadFileAtMost(p, MaxCardFile)
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
	} else {
		problem("no cmdline.txt on the FAT partition")
	}
	if b, ok := readFile(bootFile(cardpath.ConfigTxt)); ok {
		r.Arm64, r.Arm64Line = bootfiles.Arm64Effective(string(b))
	} else {
		problem("no config.txt on the FAT partition")
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
	if b, ok := readFile(cardpath.Journal); ok {
		j, err := journal.Read(bytes.NewReader(b))
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

// MaxCardFile bounds every file inspect and report read from a card: the
// journal and install log of a long install stay far below it.
const MaxCardFile = 64 << 20

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
