package hook

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nixpi/nixpi/firstboot/bootfiles"
)

// RemoveHookWords takes exactly the hook words out of the cmdline.txt at
// path, keeping every other byte, and reports whether there were any. The
// new file is written next to the old one, fsynced and renamed over it: the
// FAT partition then holds either the old or the new cmdline.txt, never a
// half-written one the Pi could not boot from.
func RemoveHookWords(path string, hook []string) (bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("read cmdline.txt: %w", err)
	}
	old := string(data)
	updated := bootfiles.RemoveHook(old, hook)
	if updated == old {
		return false, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return false, fmt.Errorf("cmdline.txt: %w", err)
	}
	if err := writeFileAtomic(path, []byte(updated), fi.Mode().Perm()); err != nil {
		return false, fmt.Errorf("rewrite %q: %w", path, err)
	}
	return true, nil
}

// writeFileAtomic writes data to a temp file in path's directory, fsyncs it,
// renames it over path and fsyncs the directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp := filepath.Join(dir, filepath.Base(path)+".nixpi-new")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err // a leftover from a power cut that cannot be cleared
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
