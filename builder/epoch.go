package builder

import (
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/nixpi/nixpi/builder/fatfs"
)

// Where the epoch came from, as recorded in the manifest.
const (
	epochFromEnv  = "SOURCE_DATE_EPOCH"
	epochFromBase = "newest file time on the base's boot partition"
)

// fatEpochUnix is 1980-01-01T00:00:00Z, the earliest time a FAT directory
// entry can hold.
const fatEpochUnix = 315532800

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
	if newest.Unix() < fatEpochUnix {
		newest = time.Unix(fatEpochUnix, 0)
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
	if t.Unix() < fatEpochUnix {
		return time.Unix(fatEpochUnix, 0).UTC()
	}
	return t
}
