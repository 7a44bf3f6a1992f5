package builder

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/builder/fatfs"
	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/retire"
)

// RestoreCard makes a card the hand-over retired bootable again: the boot
// files go back from nixpi/retired/ to the FAT's root as its manifest lists
// them, the staged EEPROM update files are deleted, the journal stays. A
// card nixpi did not retire is refused with nothing changed, as is one
// whose partition is mounted (the kernel's view and ours would disagree).
func RestoreCard(imagePath string) (*retire.Restored, error) {
	if err := refuseMounted(imagePath); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(imagePath, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", imagePath, err)
	}
	defer f.Close()
	p1, err := cardFAT(f, imagePath)
	if err != nil {
		return nil, err
	}
	fsys, err := fatfs.Open(f, p1.Start, p1.Size)
	if err != nil {
		return nil, fmt.Errorf("%q partition 1: %w", imagePath, err)
	}
	r, err := retire.Restore(NewFATCard(fsys, time.Now()))
	if cerr := fsys.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if serr := f.Sync(); serr != nil {
		err = errors.Join(err, serr)
	}
	if errors.Is(err, retire.ErrNotRetired) {
		return nil, fmt.Errorf("%q: %w (no %s on its FAT): nixpi did not retire this card, so there is nothing to restore; nothing was changed", imagePath, retire.ErrNotRetired, cardpath.RetiredManifest)
	}
	if err != nil {
		return r, fmt.Errorf("%q: %w", imagePath, err)
	}
	return r, nil
}

// cardFAT finds a Raspberry Pi card's FAT boot partition: partition 1 of an
// MBR table.
func cardFAT(f *os.File, name string) (baseimage.Partition, error) {
	table, err := baseimage.ReadTable(f)
	if err != nil {
		return baseimage.Partition{}, fmt.Errorf("%q: %w: is it a Raspberry Pi card or card image?", name, err)
	}
	p1, err := table.CardFAT()
	if err != nil {
		return baseimage.Partition{}, fmt.Errorf("%q: %w: it is not a Raspberry Pi OS card", name, err)
	}
	return p1, nil
}

// refuseMounted refuses a block device any of whose partitions (or itself)
// is mounted, as /proc/mounts lists them.
func refuseMounted(dev string) error {
	st, err := os.Stat(dev)
	if err != nil {
		return err
	}
	if st.Mode()&fs.ModeDevice == 0 {
		return nil
	}
	data, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		rest, ok := strings.CutPrefix(f[0], dev)
		if ok && strings.Trim(strings.TrimPrefix(rest, "p"), "0123456789") == "" {
			return fmt.Errorf("%s is mounted at %s: unmount it first (umount %s)", f[0], f[1], f[0])
		}
	}
	return nil
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
