package retire

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/nixpi/nixpi/firstboot/cardpath"
)

// Restored is what Restore did.
type Restored struct {
	Manifest *Manifest
	// Moved are the entries put back now (all of them, unless an earlier
	// restore was interrupted); Removed the staged EEPROM files deleted.
	Moved   []string
	Removed []string
}

// bootFirmware is the file without which the Pi 4 does not boot a card: a
// restore must leave it at the root.
const bootFirmware = "start4.elf"

// isStagedName says whether name is one of the files the hand-over stages
// at the root for the EEPROM update, or recovery.bin's name once it has
// flashed: all Restore ever deletes.
func isStagedName(name string) bool {
	switch strings.ToLower(name) {
	case cardpath.EEPROMUpdate, cardpath.EEPROMSig, cardpath.Recovery, strings.ToLower(cardpath.RecoveryDone):
		return true
	}
	return false
}

// Restore undoes Retire from the manifest: every moved entry goes back to
// the root (start*.elf last, so the card is bootable only once it is
// whole), the staged EEPROM files are deleted, then the manifest and the
// empty cardpath.Retired. The journal stays. A card without a manifest is
// refused with ErrNotRetired.
//
// The manifest is data from a card, and so is everything it lists: before
// anything changes, the staged names must be the EEPROM files nixpi
// stages, every moved entry a boot file Retire moves, every file's sha256
// (a directory's file count and bytes) the manifest's, and the result must
// hold start4.elf at the root. An entry found at both places with the
// manifest's contents is a restore interrupted after its copy: the copy
// under cardpath.Retired goes, so running Restore again finishes it.
func Restore(c Card) (*Restored, error) {
	m, err := ReadManifest(c)
	if err != nil {
		return nil, err
	}
	if err := checkRestore(c, m); err != nil {
		return nil, fmt.Errorf("%w; nothing was changed", err)
	}
	r := &Restored{Manifest: m}
	for i := len(m.Moved) - 1; i >= 0; i-- {
		f := m.Moved[i]
		moved, err := moveBack(c, retiredPath(f.Name), f.Name)
		if err != nil {
			return r, fmt.Errorf("restore %s: %w", f.Name, err)
		}
		if moved {
			r.Moved = append(r.Moved, f.Name)
		}
	}
	staged := append([]string(nil), m.Staged...)
	for _, s := range m.Staged {
		if strings.EqualFold(s, cardpath.Recovery) {
			staged = append(staged, cardpath.RecoveryDone)
		}
	}
	for _, s := range staged {
		ok, err := exists(c, s)
		if err != nil {
			return r, err
		}
		if !ok {
			continue
		}
		if err := c.Remove(s); err != nil {
			return r, fmt.Errorf("remove staged %s: %w", s, err)
		}
		r.Removed = append(r.Removed, s)
	}
	if err := c.Remove(cardpath.RetiredManifest); err != nil {
		return r, err
	}
	if left, err := c.List(cardpath.Retired); err == nil && len(left) == 0 {
		if err := c.Remove(cardpath.Retired); err != nil {
			return r, err
		}
	}
	return r, nil
}

// checkRestore refuses a restore that would delete what nixpi did not
// stage, move back what Retire never moves, put back other contents than
// Retire moved, or leave a card that does not boot. It lists every entry
// whose contents differ.
func checkRestore(c Card, m *Manifest) error {
	for _, s := range m.Staged {
		if !isStagedName(s) {
			return fmt.Errorf("%s lists %q as a staged EEPROM update file, and nixpi stages only %s, %s and %s (%s once it has flashed): the manifest is damaged or was not written by nixpi",
				cardpath.RetiredManifest, s, cardpath.EEPROMUpdate, cardpath.EEPROMSig, cardpath.Recovery, cardpath.RecoveryDone)
		}
	}
	seen := map[string]bool{}
	boots := false
	for _, f := range m.Moved {
		n := strings.ToLower(f.Name)
		switch {
		case seen[n]:
			return fmt.Errorf("%s lists %q twice: the manifest is damaged", cardpath.RetiredManifest, f.Name)
		case !IsBootFile(f.Name, f.Dir):
			return fmt.Errorf("%s lists %q among the moved boot files, and retire never moves it: the manifest is damaged or was not written by nixpi", cardpath.RetiredManifest, f.Name)
		case !f.Dir && f.SHA256 == "":
			return fmt.Errorf("%s lists %q without its sha256: the manifest is damaged", cardpath.RetiredManifest, f.Name)
		}
		seen[n] = true
		boots = boots || !f.Dir && n == bootFirmware
	}
	if !boots {
		if ok, err := exists(c, bootFirmware); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("restoring would leave no /%s, without which the Pi 4 does not boot the card: %s does not list it and the root has none; write a Raspberry Pi OS image to the card instead",
				bootFirmware, cardpath.RetiredManifest)
		}
	}
	var differ []string
	for _, f := range m.Moved {
		problem, err := checkEntry(c, f)
		if err != nil {
			return fmt.Errorf("restore %s: %w", f.Name, err)
		}
		if problem != "" {
			differ = append(differ, problem)
		}
	}
	if len(differ) > 0 {
		return fmt.Errorf("what the card holds is not what retire moved (%s): %s; put back what retire moved, or write a Raspberry Pi OS image to the card instead",
			cardpath.RetiredManifest, strings.Join(differ, "; "))
	}
	return nil
}

// checkEntry says how the entry on the card differs from the manifest's
// f, or "": a file has f's size and sha256 under cardpath.Retired, at the
// root, or at both (an interrupted restore); a directory, its copies at
// both places taken together (a file at both the same), f's files and
// bytes.
func checkEntry(c Card, f File) (string, error) {
	from, to := retiredPath(f.Name), f.Name
	atFrom, atTo, err := where(c, from, to)
	if err != nil {
		return "", err
	}
	if !atFrom && !atTo {
		return fmt.Sprintf("neither /%s nor /%s exists: %s lists %s but the card lost it", from, to, cardpath.RetiredManifest, f.Name), nil
	}
	var places []string
	if atFrom {
		places = append(places, from)
	}
	if atTo {
		places = append(places, to)
	}
	kind := map[bool]string{true: "a directory", false: "a file"}
	for _, p := range places {
		e, err := c.Stat(p)
		if err != nil {
			return "", err
		}
		if e.Dir != f.Dir {
			return fmt.Sprintf("/%s is %s, %s says %s", p, kind[e.Dir], cardpath.RetiredManifest, kind[f.Dir]), nil
		}
	}
	if f.Dir {
		return checkDir(c, f, places)
	}
	var bad []string
	var good string
	for _, p := range places {
		data, err := c.ReadFile(p)
		if err != nil {
			return "", err
		}
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != f.SHA256 || int64(len(data)) != f.Size {
			bad = append(bad, fmt.Sprintf("/%s has sha256 %s (%d bytes), %s says %s (%d bytes)", p, got, len(data), cardpath.RetiredManifest, f.SHA256, f.Size))
		} else {
			good = p
		}
	}
	switch {
	case len(bad) == 0:
		return "", nil
	case good != "":
		other := from
		if good == from {
			other = to
		}
		return fmt.Sprintf("%s, and /%s matches: delete /%s (what an interrupted restore left, or a file put there since) and run again", bad[0], good, other), nil
	}
	return strings.Join(bad, "; "), nil
}

// checkDir compares the union of a moved directory's copies (places) with
// the manifest's count of files and bytes.
func checkDir(c Card, f File, places []string) (string, error) {
	files := map[string][]byte{}
	var size int64
	var walk func(root, rel string) (string, error)
	walk = func(root, rel string) (string, error) {
		entries, err := c.List(path.Join(root, rel))
		if err != nil {
			return "", err
		}
		for _, e := range entries {
			sub := path.Join(rel, e.Name)
			if e.Dir {
				if problem, err := walk(root, sub); problem != "" || err != nil {
					return problem, err
				}
				continue
			}
			data, err := c.ReadFile(path.Join(root, sub))
			if err != nil {
				return "", err
			}
			if old, ok := files[sub]; ok {
				if string(old) != string(data) {
					return fmt.Sprintf("both /%s and /%s exist and differ: keep the right one, delete the other, and run again", path.Join(places[0], sub), path.Join(root, sub)), nil
				}
				continue
			}
			files[sub] = data
			size += int64(len(data))
		}
		return "", nil
	}
	for _, p := range places {
		if problem, err := walk(p, "."); problem != "" || err != nil {
			return problem, err
		}
	}
	if len(files) != f.Files || size != f.Size {
		return fmt.Sprintf("/%s holds %d files (%d bytes), %s says %d (%d bytes)", strings.Join(places, " and /"), len(files), size, cardpath.RetiredManifest, f.Files, f.Size), nil
	}
	return "", nil
}

// moveBack moves from to to; where to exists already (checkRestore found
// it the same), what from holds of it goes instead. It reports whether
// anything changed.
func moveBack(c Card, from, to string) (bool, error) {
	e, err := c.Stat(from)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	atTo, err := exists(c, to)
	switch {
	case err != nil:
		return false, err
	case !atTo:
		return true, c.Rename(from, to)
	case !e.Dir:
		return true, c.Remove(from)
	}
	entries, err := c.List(from)
	if err != nil {
		return false, err
	}
	for _, sub := range entries {
		if _, err := moveBack(c, path.Join(from, sub.Name), path.Join(to, sub.Name)); err != nil {
			return true, err
		}
	}
	return true, c.Remove(from)
}
