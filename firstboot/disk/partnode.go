package disk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrNoPartition is a partition the kernel does not show (yet): not in
// sysfs, or its /dev node not made yet.
var ErrNoPartition = errors.New("the kernel does not show partition")

// PartitionDevice returns the /dev node of partition n of the disk dev, and
// only when it is the block device the kernel made for that partition: sysfs
// (under root) lists partition n among dev's partitions with a major:minor,
// and the node is a block device with that same major:minor. A path that
// merely exists (a regular file, a stale node, another device) is an error;
// a partition not there yet is ErrNoPartition.
func PartitionDevice(root, dev string, n int) (string, error) {
	dir := filepath.Join(root, "sys/class/block", filepath.Base(dev))
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("read the partitions of %q from sysfs: %w", dev, err)
	}
	for _, e := range entries {
		num, err := os.ReadFile(filepath.Join(dir, e.Name(), "partition"))
		if err != nil || strings.TrimSpace(string(num)) != strconv.Itoa(n) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name(), "dev"))
		if err != nil {
			return "", fmt.Errorf("read the device number of partition %d of %q: %w", n, dev, err)
		}
		want := strings.TrimSpace(string(data))
		node := "/dev/" + e.Name()
		var st syscall.Stat_t
		switch err := syscall.Stat(filepath.Join(root, node), &st); {
		case errors.Is(err, syscall.ENOENT):
			return node, fmt.Errorf("%w %d of %q: %q does not exist yet", ErrNoPartition, n, dev, node)
		case err != nil:
			return node, fmt.Errorf("look at %q: %w", node, err)
		case st.Mode&syscall.S_IFMT != syscall.S_IFBLK:
			return node, fmt.Errorf("%q is %s, not the block device %s the kernel made for partition %d of %q", node, fileKind(st.Mode), want, n, dev)
		}
		if got := fmt.Sprintf("%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))); got != want {
			return node, fmt.Errorf("%q is the block device %s, not %s, which the kernel made for partition %d of %q", node, got, want, n, dev)
		}
		return node, nil
	}
	return "", fmt.Errorf("%w %d of %q", ErrNoPartition, n, dev)
}

func fileKind(mode uint32) string {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return "a regular file"
	case syscall.S_IFDIR:
		return "a directory"
	case syscall.S_IFCHR:
		return "a character device"
	case syscall.S_IFLNK:
		return "a symbolic link"
	}
	return "not a block device"
}
