package builder

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixpi/nixpi/builder/fatfs"
	"github.com/nixpi/nixpi/firstboot/blockdev"
	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/retire"
)

// RestoreCard makes a card the hand-over retired bootable again: the boot
// files go back from nixpi/retired/ to the FAT's root as its manifest lists
// them, the staged EEPROM update files are deleted, the journal stays (see
// retire.Restore for what it checks first). A card nixpi did not retire is
// refused with nothing changed, as is a device anything uses (a mounted
// partition: the kernel's view and ours would disagree) and an image a loop
// device reads.
func RestoreCard(imagePath string) (*retire.Restored, error) {
	f, err := openCard("/", imagePath)
	if err != nil {
		return nil, err
	}
	card, err := readCard(f, imagePath, true)
	if err != nil {
		f.Close()
		return nil, err
	}
	fsys, err := card.NeedFAT()
	if err != nil {
		card.Close()
		return nil, err
	}
	r, err := retire.Restore(NewFATCard(fsys, time.Now()))
	if serr := errors.Join(fsys.Close(), f.Sync()); serr != nil {
		err = errors.Join(err, serr)
	}
	card.FAT = nil // closed above, before the sync
	if cerr := card.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if errors.Is(err, retire.ErrNotRetired) {
		return nil, fmt.Errorf("%q: %w (no %s on its FAT): nixpi did not retire this card, so there is nothing to restore; nothing was changed", imagePath, retire.ErrNotRetired, cardpath.RetiredManifest)
	}
	if err != nil {
		return r, fmt.Errorf("%q: %w", imagePath, err)
	}
	return r, nil
}

// openCard opens the card at path (under root's /proc and /sys) to write
// it. A device is known by its number, whatever name path is (a symbolic
// link, a /dev/disk/by-id path): it is refused while anything uses it, and
// opened exclusively, so nothing mounts it meanwhile. An image file is
// refused while a loop device reads it: mounted from there, it would
// change underneath a filesystem.
func openCard(root, path string) (*os.File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", path, err)
	}
	if st.Mode().IsRegular() {
		loops, err := blockdev.LoopsOf(root, path)
		if err != nil {
			return nil, err
		}
		if len(loops) > 0 {
			quoted := make([]string, len(loops))
			for i, l := range loops {
				quoted[i] = fmt.Sprintf("%q", l)
			}
			return nil, fmt.Errorf("refusing %q: loop device %s reads it, and what is mounted from there would change underneath: unmount it and detach it first (losetup --detach %s), or restore the loop device instead; nothing was changed",
				path, strings.Join(quoted, ", "), strings.Join(loops, " "))
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("open %q: %w", path, err)
		}
		return f, nil
	}
	d, err := blockdev.ProbeNode(root, path)
	var part *blockdev.PartitionError
	if errors.As(err, &part) {
		return nil, fmt.Errorf("%w: restore-card takes the whole card, pass %s", err, part.Disk)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: pass a card image or the card's whole disk (lsblk lists them)", err)
	}
	uses, err := d.Uses()
	if err != nil {
		return nil, err
	}
	if len(uses) > 0 {
		return nil, fmt.Errorf("refusing %q: it is in use: %s: unmount it (in every mount namespace) and detach what is named first; nothing was changed", path, blockdev.Join(uses))
	}
	f, err := d.OpenExclusive(unix.O_RDWR)
	if errors.Is(err, unix.EBUSY) {
		return nil, fmt.Errorf("refusing %q: it is in use (the kernel holds it: a filesystem, swap, another device or program): close that first; nothing was changed", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", path, err)
	}
	return f, nil
}

// FATCard is a retire.Card on a FAT opened with fatfs. fatfs has no rename,
// so a move is a copy and a remove; that is fine on the workstation, where
// no power cut can leave a half-booting Pi.
type FATCard struct {
	fs  *fatfs.FS
	now time.Time // the time of directories and files it creates
}

// NewFATCard gives the retire.Card of an open FAT; new directories and
// files get the time now.
func NewFATCard(fsys *fatfs.FS, now time.Time) *FATCard { return &FATCard{fs: fsys, now: now} }

// List implements retire.Card.
func (c *FATCard) List(dir string) ([]retire.Entry, error) {
	entries, err := c.fs.List(dir)
	if err != nil {
		return nil, err
	}
	out := make([]retire.Entry, len(entries))
	for i, e := range entries {
		out[i] = retire.Entry{Name: e.Name, Dir: e.IsDir, Size: e.Size}
	}
	return out, nil
}

// Stat implements retire.Card.
func (c *FATCard) Stat(p string) (retire.Entry, error) {
	e, err := c.fs.Stat(p)
	if err != nil {
		return retire.Entry{}, err
	}
	return retire.Entry{Name: e.Name, Dir: e.IsDir, Size: e.Size}, nil
}

// ReadFile implements retire.Card.
func (c *FATCard) ReadFile(p string) ([]byte, error) { return c.fs.ReadFile(p) }

// WriteFile implements retire.Card.
func (c *FATCard) WriteFile(p string, data []byte) error { return c.fs.WriteFile(p, data, c.now) }

// MkdirAll implements retire.Card.
func (c *FATCard) MkdirAll(dir string) error { return c.fs.MkdirAll(dir, c.now) }

// Remove implements retire.Card.
func (c *FATCard) Remove(p string) error { return c.fs.Remove(p) }

// Rename implements retire.Card: files keep their times.
func (c *FATCard) Rename(from, to string) error {
	e, err := c.fs.Stat(from)
	if err != nil {
		return err
	}
	if !e.IsDir {
		data, err := c.fs.ReadFile(from)
		if err != nil {
			return err
		}
		if err := c.fs.WriteFile(to, data, c.timeOf(e)); err != nil {
			return err
		}
		return c.fs.Remove(from)
	}
	if err := c.fs.MkdirAll(to, c.timeOf(e)); err != nil {
		return err
	}
	entries, err := c.fs.List(from)
	if err != nil {
		return err
	}
	for _, sub := range entries {
		if err := c.Rename(path.Join(from, sub.Name), path.Join(to, sub.Name)); err != nil {
			return err
		}
	}
	return c.fs.Remove(from)
}

// timeOf is an entry's own time when FAT can hold it (a directory read back
// may carry none).
func (c *FATCard) timeOf(e fatfs.Entry) time.Time {
	if e.ModTime.Year() < 1980 {
		return c.now
	}
	return e.ModTime
}
