package disk

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nixpi/nixpi/firstboot/blockdev"
)

// Mount is one line of a mountinfo file: the block-device model's, which
// the device steps use to find their own mounts.
type Mount = blockdev.Mount

// ReadMountInfo reads root/proc/self/mountinfo.
func ReadMountInfo(root string) ([]Mount, error) { return blockdev.ReadMountInfo(root) }

// MountAt returns the last (topmost) mount whose mount point is exactly
// path, or nil.
func MountAt(mounts []Mount, path string) *Mount {
	path = filepath.Clean(path)
	for i := len(mounts) - 1; i >= 0; i-- {
		if mounts[i].MountPoint == path {
			return &mounts[i]
		}
	}
	return nil
}

// ByIDLinks returns the /dev/disk/by-id names (full paths as seen on the
// device) that point at dev, sorted, reading links under root.
func ByIDLinks(root, dev string) ([]string, error) {
	dir := filepath.Join(root, "dev/disk/by-id")
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", dir, err)
	}
	var links []string
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // not a link
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join("/dev/disk/by-id", target)
		}
		if filepath.Clean(target) == dev {
			links = append(links, "/dev/disk/by-id/"+e.Name())
		}
	}
	return links, nil
}

// PreferredByID picks the by-id link to record for a disk: a transport link
// (usb-, ata-, nvme-, ...) over a wwn- one, so it names the model and serial.
func PreferredByID(links []string) string {
	for _, l := range links {
		if !strings.HasPrefix(filepath.Base(l), "wwn-") {
			return l
		}
	}
	if len(links) > 0 {
		return links[0]
	}
	return ""
}

// ResolveDevLink follows a /dev symlink (a by-id path) under root and
// returns the device path it names as seen on the device ("/dev/sda").
func ResolveDevLink(root, link string) (string, error) {
	p := filepath.Clean(link)
	for range 8 {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			return "", fmt.Errorf("resolve %q: %w", link, err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			return p, nil
		}
		target, err := os.Readlink(filepath.Join(root, p))
		if err != nil {
			return "", fmt.Errorf("resolve %q: %w", link, err)
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		p = filepath.Clean(target)
	}
	return "", fmt.Errorf("resolve %q: too many links", link)
}
