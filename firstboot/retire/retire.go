// Package retire takes the SD card out of the Pi's boot once NixOS is on the
// SSD, and puts it back. With a BOOT_ORDER that tries the SD card first
// (0xf41), the bootloader boots the card for as long as its FAT holds a
// start*.elf; Retire moves the firmware's files into cardpath.Retired, one
// rename each, after writing cardpath.RetiredManifest, the list Restore
// reads to undo it. recovery.bin and the staged EEPROM update stay at the
// root: the boot ROM reads them before BOOT_ORDER applies.
//
// The device service retires (through DirCard, the mounted FAT); the
// workstation restores (nixpi restore-card, through the image's FAT). Both
// link this package, so it imports only other contract packages.
package retire

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/nixpi/nixpi/firstboot/cardpath"
)

// ManifestVersion is written as "v"; readers refuse a newer one.
const ManifestVersion = 1

// Manifest is cardpath.RetiredManifest: what Retire moved, in the order it
// moves them.
type Manifest struct {
	V         int    `json:"v"`
	BootOrder string `json:"boot_order"`
	Moved     []File `json:"moved"`
	// Staged are the EEPROM update files the hand-over put at the root;
	// Restore removes them (and cardpath.RecoveryDone, recovery.bin's name
	// once it has flashed).
	Staged []string `json:"staged,omitempty"`
}

// File is one moved root entry: at the root before, under cardpath.Retired
// after.
type File struct {
	Name string `json:"name"`
	Dir  bool   `json:"dir,omitempty"`
	// Size is the file's bytes, or a directory's files' bytes.
	Size int64 `json:"size"`
	// Files counts a directory's files; SHA256 is a file's.
	Files  int    `json:"files,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
}

// Entry is a directory entry of the card.
type Entry struct {
	Name string
	Dir  bool
	Size int64
}

// Card is the FAT partition, in slash-separated paths from its root.
type Card interface {
	// List returns dir's entries; an error wrapping fs.ErrNotExist when dir
	// does not exist.
	List(dir string) ([]Entry, error)
	// Stat describes p; an error wrapping fs.ErrNotExist when it is absent.
	Stat(p string) (Entry, error)
	ReadFile(p string) ([]byte, error)
	// WriteFile replaces p so that a power cut leaves the old or the new
	// contents, never a torn file.
	WriteFile(p string, data []byte) error
	// Rename moves a file or directory within the card; to does not exist.
	Rename(from, to string) error
	MkdirAll(dir string) error
	// Remove deletes a file or an empty directory.
	Remove(p string) error
}

// ErrNotRetired is a card without cardpath.RetiredManifest.
var ErrNotRetired = errors.New("not retired by nixpi")

// Stays is what never moves: nixpi's own directory, and what the boot ROM
// and recovery.bin read before BOOT_ORDER applies (the EEPROM update and,
// on early Pi 4 boards, the USB controller's).
func Stays(name string) bool {
	switch strings.ToLower(name) {
	case cardpath.Dir, cardpath.Recovery, strings.ToLower(cardpath.RecoveryDone),
		cardpath.EEPROMUpdate, cardpath.EEPROMSig, "vl805.bin", "vl805.sig":
		return true
	}
	return false
}

// IsBootFile says whether a root entry is one the Pi firmware boots from:
// the VideoCore firmware (start*.elf, fixup*.dat, bootcode.bin), config.txt
// and cmdline.txt, kernels and initramfs (Raspberry Pi OS's kernel*.img and
// initramfs*, Debian's vmlinuz-* and initrd.img-*), device trees and
// overlays/, armstubs and U-Boot. Anything else (issue.txt, licences, a
// user's files) stays where it is.
func IsBootFile(name string, dir bool) bool {
	n := strings.ToLower(name)
	if Stays(n) {
		return false
	}
	if dir {
		return n == "overlays"
	}
	switch n {
	case "bootcode.bin", cardpath.ConfigTxt, cardpath.Cmdline:
		return true
	}
	has := func(prefix, suffix string) bool { return strings.HasPrefix(n, prefix) && strings.HasSuffix(n, suffix) }
	return has("start", ".elf") || has("fixup", ".dat") || has("kernel", ".img") || has("", ".dtb") ||
		has("initramfs", "") || has("initrd", "") || has("vmlinuz", "") || has("armstub", ".bin") || has("u-boot", ".bin")
}

// moveRank orders the moves so that the first one already makes the
// bootloader skip the card: without a start*.elf it goes on to the next
// boot mode, and without config.txt nothing names another start file. A
// power cut later leaves a card the bootloader passes over, never one whose
// firmware starts and finds no kernel.
func moveRank(name string) int {
	n := strings.ToLower(name)
	switch {
	case strings.HasPrefix(n, "start") && strings.HasSuffix(n, ".elf"):
		return 0
	case n == cardpath.ConfigTxt:
		return 1
	}
	return 2
}

// Bootable says whether the card's root still has what the bootloader
// boots: a start*.elf or config.txt.
func Bootable(c Card) (bool, error) {
	root, err := c.List(".")
	if err != nil {
		return false, err
	}
	for _, e := range root {
		if !e.Dir && IsBootFile(e.Name, false) && moveRank(e.Name) < 2 {
			return true, nil
		}
	}
	return false, nil
}

// ReadManifest reads cardpath.RetiredManifest; an error wrapping
// ErrNotRetired when the card has none.
func ReadManifest(c Card) (*Manifest, error) {
	data, err := c.ReadFile(cardpath.RetiredManifest)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no %s: %w", cardpath.RetiredManifest, ErrNotRetired)
	}
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", cardpath.RetiredManifest, err)
	}
	if m.V < 1 || m.V > ManifestVersion {
		return nil, fmt.Errorf("%s: version %d, this nixpi reads version %d: use a newer nixpi", cardpath.RetiredManifest, m.V, ManifestVersion)
	}
	for _, f := range m.Moved {
		if f.Name == "" || strings.ContainsAny(f.Name, "/\\") || f.Name == "." || f.Name == ".." {
			return nil, fmt.Errorf("%s: bad entry name %q", cardpath.RetiredManifest, f.Name)
		}
	}
	return &m, nil
}

func retiredPath(name string) string { return path.Join(cardpath.Retired, name) }

func exists(c Card, p string) (bool, error) {
	_, err := c.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// Retire moves every boot file at the card's root into cardpath.Retired.
// It first writes the manifest (the files already listed by an earlier,
// interrupted run, plus any boot file now at the root), then renames each
// file not yet moved; crash is called after each step of that (tests
// simulate power cuts there). Rerun after an interruption at any point, it
// ends with the same card.
func Retire(c Card, bootOrder string, staged []string, crash func(point string)) (*Manifest, error) {
	if crash == nil {
		crash = func(string) {}
	}
	m, err := ReadManifest(c)
	switch {
	case errors.Is(err, ErrNotRetired):
		m = &Manifest{V: ManifestVersion, BootOrder: bootOrder}
	case err != nil:
		return nil, err
	}
	listed := map[string]bool{}
	for _, f := range m.Moved {
		listed[strings.ToLower(f.Name)] = true
	}
	root, err := c.List(".")
	if err != nil {
		return nil, err
	}
	var added []File
	for _, e := range root {
		if !IsBootFile(e.Name, e.Dir) || listed[strings.ToLower(e.Name)] {
			continue
		}
		f, err := describe(c, e)
		if err != nil {
			return nil, err
		}
		added = append(added, f)
	}
	sort.SliceStable(added, func(i, j int) bool { return moveRank(added[i].Name) < moveRank(added[j].Name) })
	if err := checkMoves(c, append(slices.Clone(m.Moved), added...)); err != nil {
		return nil, err
	}
	if err := c.MkdirAll(cardpath.Retired); err != nil {
		return nil, err
	}
	if len(added) > 0 || !sameStrings(m.Staged, staged) || m.BootOrder != bootOrder {
		m.Moved = append(m.Moved, added...)
		m.Staged = staged
		m.BootOrder = bootOrder
		data, err := json.MarshalIndent(m, "", "  ")
		if err != nil {
			return nil, err
		}
		if err := c.WriteFile(cardpath.RetiredManifest, append(data, '\n')); err != nil {
			return nil, err
		}
		crash("retire: manifest written")
	}
	for _, f := range m.Moved {
		moved, err := place(c, f.Name, f.Name, retiredPath(f.Name))
		if err != nil {
			return nil, fmt.Errorf("retire %s: %w", f.Name, err)
		}
		if moved {
			crash("retire: moved " + f.Name)
		}
	}
	return m, nil
}

// checkMoves refuses, before anything moves, every entry place would
// refuse: checked one by one as they move, a collision late in the list
// would leave start4.elf and the rest already moved.
func checkMoves(c Card, moves []File) error {
	var bad []string
	for _, f := range moves {
		atRoot, atRetired, err := where(c, f.Name, retiredPath(f.Name))
		if err != nil {
			return err
		}
		if err := conflict(f.Name, f.Name, retiredPath(f.Name), atRoot, atRetired); err != nil {
			bad = append(bad, err.Error())
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("retire: %s; nothing was moved", strings.Join(bad, "; "))
	}
	return nil
}

// place moves name from `from` to `to` unless it is there already; it
// reports whether it moved it.
func place(c Card, name, from, to string) (bool, error) {
	atFrom, atTo, err := where(c, from, to)
	if err != nil {
		return false, err
	}
	if atFrom && !atTo {
		return true, c.Rename(from, to)
	}
	return false, conflict(name, from, to, atFrom, atTo)
}

func where(c Card, from, to string) (atFrom, atTo bool, err error) {
	if atFrom, err = exists(c, from); err != nil {
		return false, false, err
	}
	atTo, err = exists(c, to)
	return atFrom, atTo, err
}

// conflict says why an entry cannot move: both or neither present is an
// error, since a person (or a damaged FAT) made that, and guessing which
// copy is right could lose the card's files. nil when it can move or has.
func conflict(name, from, to string, atFrom, atTo bool) error {
	switch {
	case atFrom && atTo:
		return fmt.Errorf("both /%s and /%s exist: keep the right one, delete the other, and run again", from, to)
	case !atFrom && !atTo:
		return fmt.Errorf("neither /%s nor /%s exists: %s lists %s but the card lost it", from, to, cardpath.RetiredManifest, name)
	}
	return nil
}

// describe gives a root entry's size, and a file's sha256 or a directory's
// file count.
func describe(c Card, e Entry) (File, error) {
	f := File{Name: e.Name, Dir: e.Dir}
	if !e.Dir {
		data, err := c.ReadFile(e.Name)
		if err != nil {
			return File{}, err
		}
		sum := sha256.Sum256(data)
		f.Size, f.SHA256 = int64(len(data)), hex.EncodeToString(sum[:])
		return f, nil
	}
	var walk func(dir string) error
	walk = func(dir string) error {
		entries, err := c.List(dir)
		if err != nil {
			return err
		}
		for _, sub := range entries {
			if sub.Dir {
				if err := walk(path.Join(dir, sub.Name)); err != nil {
					return err
				}
				continue
			}
			f.Files++
			f.Size += sub.Size
		}
		return nil
	}
	return f, walk(e.Name)
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Summary is one line for people: what the manifest says was retired.
func (m *Manifest) Summary() string {
	files := 0
	var size int64
	for _, f := range m.Moved {
		files += max(f.Files, 1)
		size += f.Size
	}
	s := fmt.Sprintf("%d root entries (%d files, %d bytes) moved to %s/ for BOOT_ORDER %s", len(m.Moved), files, size, cardpath.Retired, m.BootOrder)
	if len(m.Staged) > 0 {
		s += "; staged: " + strings.Join(m.Staged, " ")
	}
	return s
}
