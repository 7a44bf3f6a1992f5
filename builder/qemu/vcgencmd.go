package qemu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/firstboot/system"
)

// VcgencmdPath is where Raspberry Pi OS has vcgencmd (raspi-utils), which
// the service runs to read the running bootloader.
const VcgencmdPath = "/usr/bin/vcgencmd"

// standInVcgencmd answers the two questions the service asks the VideoCore
// firmware, from the EEPROM state the harness passes in QEMU's fw_cfg
// (VM.EEPROM). It is test data, in the card's root only, never on a Pi.
var standInVcgencmd = `#!/bin/sh
# stand-in vcgencmd of nixpi's QEMU harness: plays the Pi 4 bootloader.
# A real vcgencmd asks the VideoCore firmware; this one reads the EEPROM state
# the harness passes in QEMU's fw_cfg (builder/qemu, VM.EEPROM). Test data.
dir=/sys/firmware/qemu_fw_cfg/by_name/` + FwCfgPrefix + `
[ -d "$dir" ] || modprobe qemu_fw_cfg 2>/dev/null
case "$1" in
  bootloader_config|bootloader_version)
    if [ ! -r "$dir/$1/raw" ]; then
      echo "stand-in vcgencmd: no $dir/$1/raw (is this nixpi's QEMU harness, with module qemu_fw_cfg?)" >&2
      exit 1
    fi
    cat "$dir/$1/raw" ;;
  *)
    echo "error=1 error_msg=\"Command not registered\" (stand-in vcgencmd: only bootloader_config and bootloader_version)" >&2
    exit 1 ;;
esac
`

// InstallVcgencmd puts the stand-in vcgencmd into a card's ext4 root
// (partition 2), replacing any real one: the card is a copy for one run,
// never the cached base. debugfs writes it, as this host may not mount
// the card (and must not replay its journal).
func InstallVcgencmd(ctx context.Context, r system.Runner, t Tools, card string) error {
	f, err := os.Open(card)
	if err != nil {
		return err
	}
	table, err := baseimage.ReadTable(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%q: %w", card, err)
	}
	root, ok := table.Partition(2)
	if !ok {
		return fmt.Errorf("%q has no partition 2, the root filesystem", card)
	}
	script := filepath.Join(filepath.Dir(card), "stand-in-vcgencmd")
	if err := os.WriteFile(script, []byte(standInVcgencmd), 0o755); err != nil {
		return err
	}
	defer os.Remove(script)
	device := fmt.Sprintf("%s?offset=%d", card, root.Start)
	// debugfs reports a failed request on stderr and exits 0: rm fails
	// harmlessly when there is no vcgencmd yet, and reading the file back
	// is the check.
	for _, req := range []string{"rm " + VcgencmdPath, "write " + script + " " + VcgencmdPath, "set_inode_field " + VcgencmdPath + " mode 0100755"} {
		if _, err := run(ctx, r, t.Debugfs, "-w", "-R", req, device); err != nil {
			return fmt.Errorf("put the stand-in vcgencmd on %q: %w", card, err)
		}
	}
	got, err := r.Output(ctx, t.Debugfs, "-R", "cat "+VcgencmdPath, device)
	if err != nil || !bytes.Equal(got, []byte(standInVcgencmd)) {
		return fmt.Errorf("the stand-in vcgencmd did not land in %q's root (%v): %.100q", card, err, got)
	}
	mode, err := r.Output(ctx, t.Debugfs, "-R", "stat "+VcgencmdPath, device)
	if err != nil || !bytes.Contains(mode, []byte("Mode:  0755")) {
		return fmt.Errorf("the stand-in vcgencmd in %q's root is not mode 0755 (%v): %.200q", card, err, mode)
	}
	return nil
}
