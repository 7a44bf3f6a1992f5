package blockdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Kind is a way a disk is used.
type Kind int

const (
	// Mounted: a filesystem on the device is mounted.
	Mounted Kind = iota + 1
	// Swap: the device, or a swap file on its filesystem, is active swap.
	Swap
	// Held: another device is built on it (device-mapper: LVM, dm-crypt;
	// RAID), as its sysfs holders say.
	Held
	// Backing: a loop device reads from it, or from a file on its
	// filesystem.
	Backing
	// Busy: the kernel refuses to open it exclusively.
	Busy
)

// Use is one use of a disk, of one of its partitions, or of a device built
// on them (a loop device, a holder: what the disk's data is read through).
type Use struct {
	Kind Kind
	// Dev is the device used, a /dev path: the disk, a partition, or a
	// device built on them.
	Dev string
	// On is the device Dev is built on when it is not the disk's own.
	On string
	// Point is where it is mounted (Mounted), in the mount namespace of
	// process PID when that is not the reader's (0).
	Point string
	PID   int
	// File is a file on Dev's filesystem that is active swap (Swap) or a
	// loop device's backing file (Backing).
	File string
	// By is the holder (Held) or the loop device (Backing), a /dev path.
	By string
}

// Direct says whether the use is of the disk's own devices (not of one
// built on them) in the reader's own mount namespace.
func (u Use) Direct() bool { return u.On == "" && u.PID == 0 }

// String says what the use is, for a refusal.
func (u Use) String() string {
	subject := fmt.Sprintf("%q", u.Dev)
	if u.On != "" {
		subject = fmt.Sprintf("%q (on %q)", u.Dev, u.On)
	}
	switch u.Kind {
	case Mounted:
		if u.PID != 0 {
			return fmt.Sprintf("%s is mounted at %q in the mount namespace of process %d (a container, or unshare -m)", subject, u.Point, u.PID)
		}
		return fmt.Sprintf("%s is mounted at %q", subject, u.Point)
	case Swap:
		if u.File != "" {
			return fmt.Sprintf("%s holds %q, which is active swap", subject, u.File)
		}
		return fmt.Sprintf("%s is active swap", subject)
	case Held:
		return fmt.Sprintf("%s is held by %q", subject, u.By)
	case Backing:
		if u.File != "" {
			return fmt.Sprintf("%s holds %q, the backing file of loop device %q", subject, u.File, u.By)
		}
		return fmt.Sprintf("%s is the backing file of loop device %q", subject, u.By)
	case Busy:
		return fmt.Sprintf("%s is busy: the kernel holds it for a filesystem, swap or another device", subject)
	}
	return fmt.Sprintf("%s is in use", subject)
}

// Join is uses as one clause: "a; b; c".
func Join(uses []Use) string {
	s := make([]string, len(uses))
	for i, u := range uses {
		s[i] = u.String()
	}
	return strings.Join(s, "; ")
}

// member is a device the disk's data is on: the disk, a partition, or a
// device built on them (on names what it is built on).
type member struct {
	dev  Dev
	path string
	on   string
	uses []Use
}

// Uses lists every use of the disk the tables under root show: mounts in
// every mount namespace, swap, holders and loop devices, of the disk, its
// partitions and, stacked, of every device built on them (a loop device
// over a partition, mounted, is a use of the disk). Each device's uses
// follow the one that put it on the list. The kernel's exclusive claim,
// which sees what the tables miss, is Busy.
func (d *Disk) Uses() ([]Use, error) {
	mounts, err := ReadAllMountInfo(d.root)
	if err != nil {
		return nil, err
	}
	swaps, err := ReadSwaps(d.root)
	if err != nil {
		return nil, err
	}
	var members []*member
	index := map[Dev]*member{}
	add := func(dev Dev, path, on string, why *Use) {
		m := &member{dev: dev, path: path, on: on}
		if why != nil {
			m.uses = append(m.uses, *why)
		}
		members = append(members, m)
		index[dev] = m
	}
	// addTree adds a device and the partitions sysfs shows on it.
	addTree := func(dev Dev, name, on string, why *Use) {
		add(dev, "/dev/"+name, on, why)
		if sys, err := sysDir(d.root, dev); err == nil {
			for _, p := range partitions(sys) {
				if index[p.Dev] == nil {
					add(p.Dev, "/dev/"+p.Name, on, nil)
				}
			}
		}
	}
	add(d.Dev, d.DevPath(), "", nil)
	for _, p := range d.Partitions {
		add(p.Dev, "/dev/"+p.Name, "", nil)
	}
	loops := readLoops(d.root, mounts)
	// Devices built on devices built on the disk are found in turn.
	for i := 0; i < len(members); i++ {
		m := members[i]
		for _, h := range holders(d.root, m.dev) {
			u := Use{Kind: Held, Dev: m.path, On: m.on, By: "/dev/" + h.name}
			if h.dev == 0 || index[h.dev] != nil {
				m.uses = append(m.uses, u)
				continue
			}
			addTree(h.dev, h.name, m.path, &u)
		}
		for _, l := range loops {
			if index[l.dev] != nil || !slices.Contains(l.on, m.dev) {
				continue
			}
			u := Use{Kind: Backing, Dev: m.path, On: m.on, By: "/dev/" + l.name}
			if l.viaFile {
				u.File = l.file
			}
			addTree(l.dev, l.name, m.path, &u)
		}
	}
	type mountKey struct {
		dev   Dev
		point string
	}
	seen := map[mountKey]bool{}
	for _, mt := range mounts {
		for _, dev := range mountDevs(d.root, mt) {
			m := index[dev]
			// A mount seen from several namespaces is one use.
			if m == nil || seen[mountKey{dev, mt.MountPoint}] {
				continue
			}
			seen[mountKey{dev, mt.MountPoint}] = true
			m.uses = append(m.uses, Use{Kind: Mounted, Dev: m.path, On: m.on, Point: mt.MountPoint, PID: mt.PID})
		}
	}
	for _, s := range swaps {
		for _, dev := range pathDevs(d.root, s, mounts) {
			if m := index[dev]; m != nil {
				u := Use{Kind: Swap, Dev: m.path, On: m.on}
				if isFile(filepath.Join(d.root, s)) {
					u.File = s
				}
				m.uses = append(m.uses, u)
			}
		}
	}
	var uses []Use
	for _, m := range members {
		uses = append(uses, m.uses...)
	}
	return uses, nil
}

// mountDevs are the block devices a mount is from: its st_dev, or the
// source's node when that is anonymous (btrfs).
func mountDevs(root string, m Mount) []Dev {
	if d, err := ParseDev(m.MajMin); err == nil && d.Major() != 0 {
		return []Dev{d}
	}
	return appendSource(nil, root, m)
}

func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

type holder struct {
	name string
	dev  Dev // 0 when sysfs does not say
}

// holders are the devices sysfs lists as built on dev.
func holders(root string, dev Dev) []holder {
	sys, err := sysDir(root, dev)
	if err != nil {
		return nil
	}
	entries, _ := os.ReadDir(filepath.Join(sys, "holders"))
	var out []holder
	for _, e := range entries {
		h := holder{name: e.Name()}
		h.dev, _ = ParseDev(readAttr(filepath.Join(sys, "holders", e.Name()), "dev"))
		out = append(out, h)
	}
	return out
}

// Busy asks the kernel: it refuses an exclusive open (O_EXCL) of a device
// while a filesystem, swap, a device built on it or another program holds
// it, whatever the tables Uses reads show (a filesystem lazily unmounted
// but still in use, a btrfs that spans it). A busy disk is named by the
// partition that is busy when one is.
func (d *Disk) Busy() ([]Use, error) {
	busy, err := exclusiveBusy(d.Node, d.Dev)
	if err != nil || !busy {
		return nil, err
	}
	var uses []Use
	for _, p := range d.Partitions {
		if b, err := exclusiveBusy(filepath.Join(d.root, "dev", p.Name), p.Dev); err == nil && b {
			uses = append(uses, Use{Kind: Busy, Dev: "/dev/" + p.Name})
		}
	}
	if len(uses) == 0 {
		uses = append(uses, Use{Kind: Busy, Dev: d.DevPath()})
	}
	return uses, nil
}

// exclusiveBusy says whether the kernel refuses to open node, the device
// dev, exclusively. A node that is not a block device has no claim to ask
// about.
func exclusiveBusy(node string, dev Dev) (bool, error) {
	f, err := openDev(node, dev, unix.O_RDONLY|unix.O_EXCL)
	switch {
	case errors.Is(err, unix.EBUSY):
		return true, nil
	case errors.Is(err, errNotBlock):
		return false, nil
	case err != nil:
		return false, err
	}
	return false, f.Close()
}

// OpenExclusive opens the disk with flag (unix.O_RDWR|unix.O_DIRECT, say)
// and O_EXCL: while it is open nobody mounts or partitions it. The error
// wraps unix.EBUSY when someone holds it already.
func (d *Disk) OpenExclusive(flag int) (*os.File, error) {
	return openDev(d.Node, d.Dev, flag|unix.O_EXCL)
}

var errNotBlock = errors.New("not a block device")

// openDev opens node and checks that it is the block device dev: a node
// renamed or a link pointed elsewhere since dev was found is refused.
func openDev(node string, dev Dev, flag int) (*os.File, error) {
	fd, err := unix.Open(node, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: node, Err: err}
	}
	f := os.NewFile(uintptr(fd), node)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "stat", Path: node, Err: err}
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFBLK:
		f.Close()
		return nil, fmt.Errorf("%q: %w", node, errNotBlock)
	case Dev(st.Rdev) != dev:
		f.Close()
		return nil, fmt.Errorf("%q is now the block device %s, not %s as a moment ago: look again at which device it is (lsblk), then run again", node, Dev(st.Rdev), dev)
	}
	return f, nil
}
