package builder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"time"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/builder/fatfs"
	"github.com/nixpi/nixpi/firstboot/bootfiles"
)

// cardFiles is what goes onto the card besides the cmdline.txt hook.
type cardFiles struct {
	epoch    *time.Time // nil: derived from the base FAT
	binary   []byte
	config   []byte
	manifest *Manifest // filled in here and written last
}

// writeCard edits the FAT partition of the image in f: the nixpi/ files,
// the hook in cmdline.txt, and the manifest that lists them. config.txt and
// everything else stay as they are.
func writeCard(ctx context.Context, f *os.File, base *baseimage.Base, files cardFiles) error {
	fsys, err := fatfs.Open(f, base.Boot.Start, base.Boot.Size)
	if err != nil {
		return fmt.Errorf("boot partition: %w", err)
	}
	err = writeCardFiles(ctx, fsys, base, files)
	if cerr := fsys.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("boot partition: %w", cerr)
	}
	return err
}

func writeCardFiles(ctx context.Context, fsys *fatfs.FS, base *baseimage.Base, files cardFiles) error {
	if fsys.Exists(nixpiDir) {
		return fmt.Errorf("the base already has a nixpi/ directory on its boot partition: it is a nixpi card, not a stock image; build from the original Raspberry Pi OS image")
	}
	m := files.manifest
	epoch, from, err := buildEpoch(files.epoch, fsys)
	if err != nil {
		return err
	}
	m.SourceDateEpoch, m.EpochFrom = epoch.Unix(), from
	fatTime := fatClamp(epoch)

	cmdline, err := fsys.ReadFile(cmdlinePath)
	if err != nil {
		return fmt.Errorf("boot partition: read cmdline.txt: %w", err)
	}
	hooked, err := bootfiles.AddHook(string(cmdline), bootfiles.HookWords(base.FATMount))
	if err != nil {
		return fmt.Errorf("cmdline.txt: %w", err)
	}
	payload, err := Payload(files.binary, base.FATMount, epoch)
	if err != nil {
		return err
	}
	if err := fsys.MkdirAll(nixpiDir, fatTime); err != nil {
		return fmt.Errorf("boot partition: %w", err)
	}
	for _, file := range []struct {
		path string
		data []byte
	}{
		{fatBinaryPath, files.binary},
		{fatPayloadPath, payload},
		{fatConfigPath, files.config},
		{cmdlinePath, []byte(hooked)},
	} {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fsys.WriteFile(file.path, file.data, fatTime); err != nil {
			return fmt.Errorf("boot partition: write %s: %w", file.path, err)
		}
		m.AddFile(file.path, file.data)
	}
	manifest, err := m.Marshal()
	if err != nil {
		return err
	}
	if err := fsys.WriteFile(ManifestPath, manifest, fatTime); err != nil {
		return fmt.Errorf("boot partition: write %s: %w", ManifestPath, err)
	}
	return nil
}

// Where the epoch came from, as recorded in the manifest.
const (
	epochFromEnv  = "SOURCE_DATE_EPOCH"
	epochFromBase = "newest file time on the base's boot partition"
)

// fatEpoch is the earliest time a FAT directory entry can hold.
var fatEpoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// buildEpoch is SOURCE_DATE_EPOCH when given; otherwise the newest
// modification time among the base's boot files, which is the image's
// release date for Raspberry Pi OS, and never the clock.
func buildEpoch(given *time.Time, fsys *fatfs.FS) (time.Time, string, error) {
	if given != nil {
		return given.UTC(), epochFromEnv, nil
	}
	newest, err := newestModTime(fsys, ".", 0)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("boot partition: %w", err)
	}
	if newest.Before(fatEpoch) {
		newest = fatEpoch
	}
	return newest.UTC(), epochFromBase, nil
}

// newestModTime walks the FAT (which has no links, so no cycles; depth is
// bounded anyway against a corrupt directory tree).
func newestModTime(fsys *fatfs.FS, dir string, depth int) (time.Time, error) {
	if depth > 16 {
		return time.Time{}, errors.New("directories nested more than 16 deep: is the file system corrupt?")
	}
	entries, err := fsys.List(dir)
	if err != nil {
		return time.Time{}, err
	}
	var newest time.Time
	for _, e := range entries {
		p := path.Join(dir, e.Name)
		if e.IsDir {
			t, err := newestModTime(fsys, p, depth+1)
			if err != nil {
				return time.Time{}, err
			}
			if t.After(newest) {
				newest = t
			}
			continue
		}
		if e.ModTime.After(newest) {
			newest = e.ModTime
		}
	}
	return newest, nil
}

// fatClamp keeps t in what a FAT directory entry can hold.
func fatClamp(t time.Time) time.Time {
	if t.Before(fatEpoch) {
		return fatEpoch
	}
	return t
}
