package disk

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// What the Pi 4's boot chain can boot from, whatever the layout.
const (
	// BootableSectorSize is the one logical sector size the Pi 4's
	// bootloader boots a USB disk with: with 4096-byte logical sectors it
	// stops at "MSD unsupported block size 4096" (raspberrypi/firmware
	// issue 1840).
	BootableSectorSize = 512
	// MaxBootableSectors is the largest disk, in logical sectors, the Pi's
	// U-Boot sizes right. It reads a USB disk's capacity with READ
	// CAPACITY(10) only (common/usb_storage.c, usb_read_capacity), whose
	// 32-bit last-LBA field a larger disk fills with 0xFFFFFFFF (or, behind
	// some bridges, the size modulo 2^32), and adds one in a u32: a disk of
	// 2^32 sectors or more gets a size of 0 (or a wrong one), so
	// disk/part_efi.c's validate_gpt_header rejects its GPT
	// ("GPT: first_usable_lba incorrect: 22 > 0", nixpkgs issue 127814;
	// "last_usable_lba incorrect", issue 114157) and the Pi stops at the
	// U-Boot prompt. A GPT laid out for the first 2 TiB fails the same
	// check, and a hybrid MBR too: part_test_efi takes any MBR with a
	// protective 0xEE entry at LBA 1 for a GPT disk.
	MaxBootableSectors = 1<<32 - 1
)

// LogicalBlockSize is the logical sector size of the whole disk d as the
// kernel has it (sysfs queue/logical_block_size under root), or lsblk's
// LOG-SEC when sysfs does not say. Unlike SectorSize it never guesses.
func LogicalBlockSize(root string, d *Device) (int64, error) {
	kname := d.KName
	if kname == "" {
		kname = filepath.Base(d.DevPath())
	}
	path := filepath.Join("/sys/class/block", kname, "queue/logical_block_size")
	data, err := os.ReadFile(filepath.Join(root, path))
	switch {
	case err == nil:
		n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("read the logical sector size of %q: %s holds %q", d.DevPath(), path, strings.TrimSpace(string(data)))
		}
		return n, nil
	case !errors.Is(err, fs.ErrNotExist):
		return 0, fmt.Errorf("read the logical sector size of %q: %w", d.DevPath(), err)
	case d.LogSec > 0:
		return int64(d.LogSec), nil
	}
	return 0, fmt.Errorf("read the logical sector size of %q: neither %s nor lsblk's LOG-SEC says it", d.DevPath(), path)
}
