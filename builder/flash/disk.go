package flash

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nixpi/nixpi/firstboot/blockdev"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/termtext"
)

// Disk is a whole disk as sysfs describes it, for flash to judge and show:
// the block-device model the Pi's disk steps use too.
type Disk struct {
	*blockdev.Disk
	Path string // as given
}

// String names the disk for messages: path, model and size. The path
// (as given) and the model (sysfs: a device's own firmware says it, or a
// loop device's backing file name) go through termtext.Line: neither may
// drive the terminal or fake a line of the message.
func (d *Disk) String() string {
	return fmt.Sprintf("%s (%s, %s)", termtext.Line(d.Path), orUnknown(d.Model, "unknown model"), config.Size(d.Size).Approx())
}

// Describe is what flash shows before it asks: model, serial, size and
// the current partitions. Every field from sysfs is one escaped line
// (termtext.Line), so the confirmation cannot be rewritten by a disk.
func (d *Disk) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s, %d bytes (%s)", termtext.Line(d.Path), orUnknown(d.Model, "unknown"), d.Size, config.Size(d.Size).Approx())
	if d.Bus != "" {
		fmt.Fprintf(&b, ", on %s", termtext.Line(d.Bus))
	}
	fmt.Fprintf(&b, "\n  serial: %s\n", orUnknown(d.Serial, "unknown"))
	if len(d.Partitions) == 0 {
		b.WriteString("  partitions: none\n")
	}
	for _, p := range d.Partitions {
		fmt.Fprintf(&b, "  partition /dev/%s: %s\n", termtext.Line(p.Name), config.Size(p.Size).Approx())
	}
	return b.String()
}

// orUnknown is s escaped to one line, or unknown when sysfs says nothing.
func orUnknown(s, unknown string) string {
	if s == "" {
		return unknown
	}
	return termtext.Line(s)
}

// probeDisk reads what sysfs (under root, "/" on a real system) knows of
// the block device at path. It refuses a path that is not a block device
// or is a partition, naming the disk to pass instead.
func probeDisk(root, path string) (*Disk, error) {
	bd, err := blockdev.ProbeNode(root, path)
	var part *blockdev.PartitionError
	switch {
	case errors.As(err, &part):
		return nil, fmt.Errorf("%w: flash writes a whole disk, pass %s", err, part.Disk)
	case err != nil:
		return nil, fmt.Errorf("%w: pass the card's whole disk, e.g. /dev/sdb or /dev/mmcblk0 (lsblk lists them)", err)
	}
	return &Disk{Disk: bd, Path: path}, nil
}

// checkUnused refuses a disk that the system uses, naming each use and
// what ends it: a filesystem of it mounted in any mount namespace (the one
// holding / first of all), swap on it, another device built on it
// (device-mapper, md), a loop device reading it (stacked, or through a file
// on it), and what is mounted from those. With allowMounted the disk's own
// mounts are left for after the confirmation, which unmounts them (never
// /).
func (d *Disk) checkUnused(allowMounted bool) error {
	uses, err := d.Uses()
	if err != nil {
		return fmt.Errorf("refusing %s: %w", d, err)
	}
	var refused []string
	for _, u := range uses {
		if u.Kind == blockdev.Mounted && u.Point == "/" && u.Direct() {
			return fmt.Errorf("refusing %s: %s (it is the disk this system runs from)", d, u)
		}
		if allowMounted && u.Kind == blockdev.Mounted && u.On == "" {
			continue
		}
		refused = append(refused, fmt.Sprintf("%s (%s)", u, endUse(u)))
	}
	if len(refused) > 0 {
		return fmt.Errorf("refusing %s: it is in use: %s; or pick another device", d, strings.Join(refused, "; "))
	}
	return nil
}

// endUse is how a person ends a use.
func endUse(u blockdev.Use) string {
	switch u.Kind {
	case blockdev.Mounted:
		if u.PID != 0 {
			return fmt.Sprintf("unmount it there first: nsenter --target %d --mount umount %q", u.PID, u.Point)
		}
		if u.On != "" {
			return fmt.Sprintf("umount %q first", u.Point)
		}
		return fmt.Sprintf("umount %q first, or pass --unmount", u.Point)
	case blockdev.Swap:
		if u.File != "" {
			return fmt.Sprintf("swapoff %q first", u.File)
		}
		return fmt.Sprintf("swapoff %q first", u.Dev)
	case blockdev.Held:
		return "remove that device first: dmsetup remove, vgchange -an or mdadm --stop"
	case blockdev.Backing:
		return fmt.Sprintf("detach it first: losetup --detach %q", u.By)
	}
	return "stop what uses it first"
}

// mountPoints is where the disk's own filesystems are mounted in this
// mount namespace, each before those mounted inside it.
func (d *Disk) mountPoints() ([]string, error) {
	uses, err := d.Uses()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, u := range uses {
		if u.Kind == blockdev.Mounted && u.Direct() {
			out = append(out, u.Point)
		}
	}
	// A mount inside another has the longer path.
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) < len(out[j]) })
	return out, nil
}

// openExclusive opens the disk for direct writes, exclusively: the kernel
// refuses while anyone else holds it that way (a mount, a partitioner,
// device-mapper) and keeps others out until it is closed.
func (d *Disk) openExclusive() (*os.File, error) {
	f, err := d.OpenExclusive(unix.O_RDWR | unix.O_DIRECT)
	if errors.Is(err, unix.EBUSY) {
		return nil, fmt.Errorf("refusing %s: it is in use (another program holds it open exclusively: a mount, a partitioner, device-mapper); close that and try again", d)
	}
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", d.Path, err)
	}
	return f, nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
