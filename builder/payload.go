package builder

import (
	"bytes"
	"fmt"
	"path"
	"sort"
	"time"

	"github.com/cavaliergopher/cpio"

	"github.com/nixpi/nixpi/assets"
	"github.com/nixpi/nixpi/firstboot/cardpath"
)

// payloadEntry is one file, directory or symlink of payload.cpio.
type payloadEntry struct {
	name string // relative to "/", no leading slash
	mode cpio.FileMode
	data []byte // file contents, or the target of a symlink
}

// Payload builds payload.cpio: the root filesystem files the hook installs
// (the device binary, its systemd unit and the unit's multi-user.target.wants
// symlink) plus their parent directories. The archive is reproducible: entries
// sorted by name, every mtime epoch, owner root, inode numbers by position.
func Payload(binary []byte, bootDir string, epoch time.Time) ([]byte, error) {
	if len(binary) == 0 {
		return nil, fmt.Errorf("payload: the nixpi-firstboot binary is empty")
	}
	unit, err := assets.FirstbootUnit(bootDir)
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	entries := withParentDirs([]payloadEntry{
		{name: cardpath.InstalledBinary, mode: cpio.TypeReg | 0o755, data: binary},
		{name: cardpath.Unit, mode: cpio.TypeReg | 0o644, data: unit},
		{name: cardpath.UnitWantedBy, mode: cpio.TypeSymlink | 0o777, data: []byte(cardpath.UnitWantedByTarget)},
	})
	var buf bytes.Buffer
	w := cpio.NewWriter(&buf)
	for i, e := range entries {
		hdr := &cpio.Header{
			Name:    e.name,
			Mode:    e.mode,
			ModTime: epoch,
			Size:    int64(len(e.data)),
			Links:   1,
			Inode:   int64(i + 1),
		}
		if e.mode&cpio.ModeType == cpio.TypeDir {
			hdr.Links = 2
		}
		if err := w.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("payload: %s: %w", e.name, err)
		}
		if _, err := w.Write(e.data); err != nil {
			return nil, fmt.Errorf("payload: %s: %w", e.name, err)
		}
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	return buf.Bytes(), nil
}

// withParentDirs adds a 0755 directory entry for every parent of every
// entry, so extraction creates them with known modes, and sorts by name
// (a parent sorts before its children).
func withParentDirs(entries []payloadEntry) []payloadEntry {
	seen := map[string]bool{}
	for _, e := range entries {
		seen[e.name] = true
	}
	out := append([]payloadEntry(nil), entries...)
	for _, e := range entries {
		for dir := path.Dir(e.name); dir != "."; dir = path.Dir(dir) {
			if !seen[dir] {
				seen[dir] = true
				out = append(out, payloadEntry{name: dir, mode: cpio.TypeDir | 0o755})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}
