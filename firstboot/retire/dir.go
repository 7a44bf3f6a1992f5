package retire

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// DirCard is a Card on a mounted FAT (the device's /boot/firmware). Renames
// are the kernel's, one directory entry each; every change is fsynced with
// its directory, so it is on the card before the next one starts.
type DirCard string

func (d DirCard) path(p string) string { return filepath.Join(string(d), filepath.FromSlash(p)) }

// List implements Card.
func (d DirCard) List(dir string) ([]Entry, error) {
	des, err := os.ReadDir(d.path(dir))
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(des))
	for _, de := range des {
		info, err := de.Info()
		if err != nil {
			return nil, err
		}
		out = append(out, Entry{Name: de.Name(), Dir: de.IsDir(), Size: info.Size()})
	}
	return out, nil
}

// Stat implements Card.
func (d DirCard) Stat(p string) (Entry, error) {
	info, err := os.Stat(d.path(p))
	if err != nil {
		return Entry{}, err
	}
	return Entry{Name: info.Name(), Dir: info.IsDir(), Size: info.Size()}, nil
}

// ReadFile implements Card.
func (d DirCard) ReadFile(p string) ([]byte, error) { return os.ReadFile(d.path(p)) }

// WriteFile implements Card: a temporary file beside p, fsynced, renamed
// over p.
func (d DirCard) WriteFile(p string, data []byte) error {
	dst := d.path(p)
	tmp := dst + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	if err := errors.Join(werr, serr, f.Close()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %q: %w", dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	return syncDir(filepath.Dir(dst))
}

// Rename implements Card.
func (d DirCard) Rename(from, to string) error {
	src, dst := d.path(from), d.path(to)
	if err := os.Rename(src, dst); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return err
	}
	return syncDir(filepath.Dir(src))
}

// MkdirAll implements Card.
func (d DirCard) MkdirAll(dir string) error { return os.MkdirAll(d.path(dir), 0o755) }

// Remove implements Card.
func (d DirCard) Remove(p string) error {
	if err := os.Remove(d.path(p)); err != nil {
		return err
	}
	return syncDir(filepath.Dir(d.path(p)))
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %q: %w", dir, err)
	}
	return nil
}
