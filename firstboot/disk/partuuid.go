package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

var mbrPartUUIDRE = regexp.MustCompile(`^([0-9a-f]{8})-([0-9a-f]{2})$`)

// ValidMBRPartUUID says whether s is an MBR partition's PARTUUID: the disk
// signature (the u32 at byte 440, 8 lowercase hex digits) and the
// partition number in hex, "1234abcd-01".
func ValidMBRPartUUID(s string) bool { return mbrPartUUIDRE.MatchString(s) }

// FindMBRPartition returns the device node (/dev/mmcblk0p1) of the
// partition whose MBR PARTUUID is partuuid, by reading each disk's
// signature itself: the installed NixOS looks for the card before udev's
// /dev/disk/by-partuuid may exist, and without blkid. It looks under root
// (sys/class/block, dev/); an error wrapping os.ErrNotExist when no
// partition has it.
func FindMBRPartition(root, partuuid string) (string, error) {
	m := mbrPartUUIDRE.FindStringSubmatch(strings.ToLower(partuuid))
	if m == nil {
		return "", fmt.Errorf("PARTUUID %q is not an MBR one (8 hex digits, '-', 2 hex digits)", partuuid)
	}
	sig, _ := strconv.ParseUint(m[1], 16, 32)
	num, _ := strconv.ParseUint(m[2], 16, 8)
	classDir := filepath.Join(root, "sys", "class", "block")
	entries, err := os.ReadDir(classDir)
	if err != nil {
		return "", fmt.Errorf("list block devices: %w", err)
	}
	signatures := map[string]uint32{}
	for _, e := range entries {
		name := e.Name()
		data, err := os.ReadFile(filepath.Join(classDir, name, "partition"))
		if err != nil {
			continue // a whole disk
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 8); err != nil || n != num {
			continue
		}
		link, err := filepath.EvalSymlinks(filepath.Join(classDir, name))
		if err != nil {
			continue
		}
		parent := filepath.Base(filepath.Dir(link))
		s, ok := signatures[parent]
		if !ok {
			s, err = mbrSignature(filepath.Join(root, "dev", parent))
			if err != nil {
				continue
			}
			signatures[parent] = s
		}
		if uint64(s) == sig {
			return "/dev/" + name, nil
		}
	}
	return "", fmt.Errorf("no partition has PARTUUID %s: %w", partuuid, os.ErrNotExist)
}

// mbrSignature reads a disk's MBR signature; an error when the disk has no
// MBR boot signature (0x55aa at 510).
func mbrSignature(dev string) (uint32, error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var sector [512]byte
	if _, err := io.ReadFull(f, sector[:]); err != nil {
		return 0, err
	}
	if sector[510] != 0x55 || sector[511] != 0xaa {
		return 0, errors.New("no MBR")
	}
	return binary.LittleEndian.Uint32(sector[440:444]), nil
}
