// Package blockdev is the one model of a machine's block devices that both
// sides use: `nixpi flash` and `nixpi restore-card` on the workstation, the
// target step on the Pi. It answers "what is this disk, and does anything
// use it?": its sysfs description, its partitions, and every use the kernel
// shows (a mount in any mount namespace, swap, a device built on it, a loop
// device reading it, stacked or through a file, an exclusive open).
//
// A device is known by its number (major:minor), never by its path: a path
// is only ever stat'ed to find the number, and a node opened is checked to
// be that device. Everything is read under a root the caller passes ("/" on
// a real system, a t.TempDir() with a made-up /proc and /sys in tests).
//
// Both binaries link it, so it imports neither builder code nor the device
// service: the standard library and golang.org/x/sys only.
package blockdev

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Dev is a device number, as stat's st_rdev (a device node) or st_dev (the
// filesystem a file is on) gives it.
type Dev uint64

// MakeDev is the device major:minor.
func MakeDev(major, minor uint32) Dev { return Dev(unix.Mkdev(major, minor)) }

// Major is the driver's number: 8 for SCSI disks, 7 for loop devices, 0
// for a filesystem without a block device of its own (btrfs, tmpfs).
func (d Dev) Major() uint32 { return unix.Major(uint64(d)) }

// Minor is the device's number within its driver.
func (d Dev) Minor() uint32 { return unix.Minor(uint64(d)) }

// String is "major:minor", as sysfs and mountinfo spell it.
func (d Dev) String() string { return fmt.Sprintf("%d:%d", d.Major(), d.Minor()) }

// ParseDev reads "major:minor".
func ParseDev(s string) (Dev, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), ":")
	major, err1 := strconv.ParseUint(a, 10, 32)
	minor, err2 := strconv.ParseUint(b, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("device number %q is not major:minor", s)
	}
	return MakeDev(uint32(major), uint32(minor)), nil
}

// NodeDev is the device number of the block device node at path, followed
// through symbolic links (a /dev/disk/by-id name); an error when path is
// anything else.
func NodeDev(path string) (Dev, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("device %q: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, fmt.Errorf("%q is not a block device", path)
	}
	return Dev(st.Rdev), nil
}

// pathDevs are the devices a file at path (under root) occupies: the device
// itself for a block device node, else the devices of the filesystem that
// holds the file; none when there is no such file.
func pathDevs(root, path string, mounts []Mount) []Dev {
	var st unix.Stat_t
	if unix.Stat(filepath.Join(root, path), &st) != nil {
		return nil
	}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		return []Dev{Dev(st.Rdev)}
	}
	return fsDevs(root, Dev(st.Dev), mounts)
}

// fsDevs are the block devices a filesystem with st_dev fs lives on. A
// filesystem on a block device has that device's number. One without
// gets an anonymous number (major 0) that only its mount can pair with its
// source device: the mount's own number, or, for btrfs, which numbers
// each subvolume apart from the mount, the st_dev of its mount point.
// Only btrfs mount points are stat'ed: a dead network filesystem's would
// hang.
func fsDevs(root string, fs Dev, mounts []Mount) []Dev {
	if fs.Major() != 0 {
		return []Dev{fs}
	}
	var out []Dev
	for _, m := range mounts {
		if m.MajMin == fs.String() || m.FSType == "btrfs" && m.PID == 0 && statDev(filepath.Join(root, m.MountPoint)) == fs {
			out = appendSource(out, root, m)
		}
	}
	return out
}

// appendSource adds the device of m's source node, when it is one.
func appendSource(out []Dev, root string, m Mount) []Dev {
	if !strings.HasPrefix(m.Source, "/") {
		return out
	}
	if d, err := NodeDev(filepath.Join(root, m.Source)); err == nil && !slices.Contains(out, d) {
		out = append(out, d)
	}
	return out
}

// statDev is the st_dev of the file at path, 0 when there is none.
func statDev(path string) Dev {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return Dev(st.Dev)
}

// MountOf returns the mount that holds path: the topmost mount whose mount
// point is the longest prefix of path.
func MountOf(mounts []Mount, path string) *Mount {
	path = filepath.Clean(path)
	var best *Mount
	for i := range mounts {
		mp := mounts[i].MountPoint
		if mp == path || mp == "/" || strings.HasPrefix(path, mp+"/") {
			if best == nil || len(mp) >= len(best.MountPoint) {
				best = &mounts[i]
			}
		}
	}
	return best
}
