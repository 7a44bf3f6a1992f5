package builder

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/builder/fatfs"
	"github.com/nixpi/nixpi/firstboot/bootfiles"
	"github.com/nixpi/nixpi/firstboot/cardpath"
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
	if err := RefuseNixpiCard(fsys); err != nil {
		return err
	}
	m := files.manifest
	epoch, from, err := buildEpoch(files.epoch, fsys)
	if err != nil {
		return err
	}
	m.SourceDateEpoch, m.EpochFrom = epoch.Unix(), from
	fatTime := fatClamp(epoch)

	if err := checkFreeSpace(fsys, files.binary, files.config); err != nil {
		return err
	}
	cmdline, err := fsys.ReadFile(cardpath.Cmdline)
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
	if err := fsys.MkdirAll(cardpath.Dir, fatTime); err != nil {
		return fmt.Errorf("boot partition: %w", err)
	}
	for _, file := range []struct {
		path string
		data []byte
	}{
		{cardpath.Binary, files.binary},
		{cardpath.Payload, payload},
		{cardpath.Config, files.config},
		{cardpath.Cmdline, []byte(hooked)},
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
	if err := fsys.WriteFile(cardpath.Manifest, manifest, fatTime); err != nil {
		return fmt.Errorf("boot partition: write %s: %w", cardpath.Manifest, err)
	}
	return nil
}

// RefuseNixpiCard refuses a base whose boot partition fsys carries nixpi
// already: a card made from it would hold two installs' files, or a
// retired card's. Build and flash --base (before its first write) both
// ask it.
func RefuseNixpiCard(fsys *fatfs.FS) error {
	if fsys.Exists(cardpath.Dir) {
		return fmt.Errorf("the base already has a nixpi/ directory on its boot partition: it is a nixpi card, not a stock image; build from the original Raspberry Pi OS image")
	}
	return nil
}

// checkFreeSpace refuses early, with numbers, when the boot partition
// cannot hold the nixpi files: the binary is on it twice (as itself and in
// the payload), plus the config and room for the manifest and the device's
// journal.
func checkFreeSpace(fsys *fatfs.FS, binary, config []byte) error {
	const slack = 4 << 20 // manifest, directory, cluster rounding, journal
	need := int64(2*len(binary)+len(config)) + slack
	free, err := fsys.FreeBytes()
	if err != nil {
		return fmt.Errorf("boot partition: %w", err)
	}
	if free < need {
		return fmt.Errorf("boot partition has %d MiB free, nixpi needs %d MiB: use an image with a larger boot partition (Raspberry Pi OS has 512 MiB)", free>>20, (need+1<<20-1)>>20)
	}
	return nil
}
