package builder

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nixpi/nixpi/firstboot/config"
)

// Disk is a whole disk as sysfs describes it, for flash to judge and show.
type Disk struct {
	Path      string // as given
	Name      string // kernel name: "sdb", "mmcblk0", "loop3"
	Dev       uint64 // device number
	Model     string // vendor and model, or what backs a loop device
	Serial    string
	Size      int64
	Removable bool   // sysfs says so, or it sits on USB or an MMC host
	Bus       string // "usb", "mmc", "loop", "device-mapper", or ""
	// LogicalBlock is the smallest unit the disk writes (O_DIRECT alignment).
	LogicalBlock int64
	Partitions   []DiskPartition
	sys          string // its sysfs directory
}

// DiskPartition is one partition of a Disk.
type DiskPartition struct {
	Name string
	Dev  uint64
	Size int64
}

// String names the disk for messages: path, model and size.
func (d *Disk) String() string {
	model := d.Model
	if model == "" {
		model = "unknown model"
	}
	return fmt.Sprintf("%s (%s, %s)", d.Path, model, config.Size(d.Size).Approx())
}

// Describe is what flash shows before it asks: model, serial, size and
// the current partitions.
func (d *Disk) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s, %d bytes (%s)", d.Path, orUnknown(d.Model), d.Size, config.Size(d.Size).Approx())
	if d.Bus != "" {
		fmt.Fprintf(&b, ", on %s", d.Bus)
	}
	fmt.Fprintf(&b, "\n  serial: %s\n", orUnknown(d.Serial))
	if len(d.Partitions) == 0 {
		b.WriteString("  partitions: none\n")
	}
	for _, p := range d.Partitions {
		fmt.Fprintf(&b, "  partition /dev/%s: %s\n", p.Name, config.Size(p.Size).Approx())
	}
	return b.String()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// ProbeDisk reads what sysfs (under root, "/" on a real system) knows of
// the block device at path. It refuses a path that is not a block device
// or is a partition, naming the disk to pass instead.
func ProbeDisk(root, path string) (*Disk, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("device %q: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, fmt.Errorf("%q is not a block device: pass the card's whole disk, e.g. /dev/sdb or /dev/mmcblk0 (lsblk lists them)", path)
	}
	dev := uint64(st.Rdev)
	link := filepath.Join(root, "sys/dev/block", fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev)))
	sys, err := filepath.EvalSymlinks(link)
	if err != nil {
		return nil, fmt.Errorf("device %q: no sysfs entry %s: %w", path, link, err)
	}
	d := &Disk{Path: path, Name: filepath.Base(sys), Dev: dev, sys: sys}
	if exists(filepath.Join(sys, "partition")) {
		parent := filepath.Base(filepath.Dir(sys))
		return nil, fmt.Errorf("%q is partition %s of /dev/%s: flash writes a whole disk, pass /dev/%s", path, readSys(sys, "partition"), parent, parent)
	}
	sectors, err := strconv.ParseInt(readSys(sys, "size"), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("device %q: size in sysfs: %w", path, err)
	}
	d.Size = sectors * 512 // sysfs counts 512-byte sectors whatever the disk's
	d.LogicalBlock, _ = strconv.ParseInt(readSys(sys, "queue/logical_block_size"), 10, 64)
	d.LogicalBlock = max(d.LogicalBlock, 512)
	d.Removable = readSys(sys, "removable") == "1"
	switch {
	case strings.Contains(sys, "/usb"):
		d.Bus = "usb"
	case strings.Contains(sys, "/mmc"):
		d.Bus = "mmc"
	case strings.HasPrefix(d.Name, "loop"):
		d.Bus = "loop"
	case strings.HasPrefix(d.Name, "dm-"):
		d.Bus = "device-mapper"
	}
	d.Removable = d.Removable || d.Bus == "usb" || d.Bus == "mmc"
	d.Model = strings.Join(strings.Fields(readSys(sys, "device/vendor")+" "+readSys(sys, "device/model")+" "+readSys(sys, "device/name")), " ")
	if backing := readSys(sys, "loop/backing_file"); backing != "" {
		d.Model = "loop device of " + backing
	}
	if name := readSys(sys, "dm/name"); name != "" {
		d.Model = "device-mapper " + name
	}
	d.Serial = readSys(sys, "device/serial")
	// A USB disk's serial is its USB device's, a few levels up.
	for dir, i := sys, 0; d.Serial == "" && d.Bus == "usb" && i < 8; dir, i = filepath.Dir(dir), i+1 {
		d.Serial = readSys(dir, "serial")
	}
	entries, _ := os.ReadDir(sys)
	for _, e := range entries {
		p := filepath.Join(sys, e.Name())
		if !exists(filepath.Join(p, "partition")) {
			continue
		}
		n, _ := strconv.ParseInt(readSys(p, "size"), 10, 64)
		d.Partitions = append(d.Partitions, DiskPartition{Name: e.Name(), Dev: parseDev(readSys(p, "dev")), Size: n * 512})
	}
	return d, nil
}

// devices is the disk's device number and its partitions'.
func (d *Disk) devices() map[uint64]string {
	m := map[uint64]string{d.Dev: d.Name}
	for _, p := range d.Partitions {
		m[p.Dev] = p.Name
	}
	return m
}

// checkUnused refuses a disk that the system uses: a filesystem of it
// mounted in any mount namespace (the one holding / first of all), a
// swap area on it, or another device built on it (device-mapper, md).
// With allowMounted only a mount at / is refused among the mounts.
func (d *Disk) checkUnused(root string, allowMounted bool) error {
	devs := d.devices()
	mountinfos, _ := filepath.Glob(filepath.Join(root, "proc/[0-9]*/mountinfo"))
	mountinfos = append([]string{filepath.Join(root, "proc/self/mountinfo")}, mountinfos...)
	if allowMounted {
		mountinfos = mountinfos[:1]
	}
	for _, path := range mountinfos {
		for _, m := range d.mounts(path, devs) {
			if m.point == "/" {
				return fmt.Errorf("refusing %s: /dev/%s is mounted at / (it is the disk this system runs from)", d, m.dev)
			}
			if !allowMounted {
				return fmt.Errorf("refusing %s: /dev/%s is mounted at %s: unmount it first (umount %q, or pass --unmount), or pick another device", d, m.dev, m.point, m.point)
			}
		}
	}
	if swaps, err := os.ReadFile(filepath.Join(root, "proc/swaps")); err == nil {
		for _, line := range strings.Split(string(swaps), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			if name, ok := devs[statDev(unescapeMount(f[0]))]; ok {
				return fmt.Errorf("refusing %s: /dev/%s is in use as swap (swapoff %s first)", d, name, f[0])
			}
		}
	}
	holderDirs := []string{filepath.Join(d.sys, "holders")}
	for _, p := range d.Partitions {
		holderDirs = append(holderDirs, filepath.Join(d.sys, p.Name, "holders"))
	}
	for _, dir := range holderDirs {
		holders, _ := os.ReadDir(dir)
		if len(holders) > 0 {
			return fmt.Errorf("refusing %s: /dev/%s is held by /dev/%s (device-mapper, LVM or RAID built on it): remove that first", d, filepath.Base(filepath.Dir(dir)), holders[0].Name())
		}
	}
	return nil
}

// mountPoints is where the disk's filesystems are mounted in this mount
// namespace, in mount order.
func (d *Disk) mountPoints(root string) []string {
	var out []string
	for _, m := range d.mounts(filepath.Join(root, "proc/self/mountinfo"), d.devices()) {
		out = append(out, m.point)
	}
	return out
}

type mount struct{ dev, point string }

// mounts lists the mounts in the mountinfo file at path of a device in
// devs, by device number or by source path.
func (d *Disk) mounts(path string, devs map[uint64]string) []mount {
	f, err := os.Open(path)
	if err != nil {
		return nil // the process is gone
	}
	defer f.Close()
	var out []mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+2 >= len(fields) {
			continue
		}
		name, ok := devs[parseDev(fields[2])]
		if !ok && strings.HasPrefix(fields[sep+2], "/dev/") {
			name, ok = devs[statDev(unescapeMount(fields[sep+2]))]
		}
		if ok {
			out = append(out, mount{name, unescapeMount(fields[4])})
		}
	}
	return out
}

// openExclusive opens the disk for direct writes, exclusively: the kernel
// refuses while anyone else holds it that way (a mount, a partitioner,
// device-mapper) and keeps others out until it is closed.
func (d *Disk) openExclusive() (*os.File, error) {
	fd, err := unix.Open(d.Path, unix.O_RDWR|unix.O_EXCL|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EBUSY) {
		return nil, fmt.Errorf("refusing %s: it is in use (another program holds it open exclusively: a mount, a partitioner, device-mapper); close that and try again", d)
	}
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", d.Path, err)
	}
	return os.NewFile(uintptr(fd), d.Path), nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// readSys is a sysfs attribute, trimmed; empty when it is missing.
func readSys(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// parseDev reads "MAJ:MIN".
func parseDev(s string) uint64 {
	a, b, ok := strings.Cut(s, ":")
	maj, err1 := strconv.ParseUint(a, 10, 32)
	min, err2 := strconv.ParseUint(b, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return ^uint64(0)
	}
	return unix.Mkdev(uint32(maj), uint32(min))
}

// statDev is the device number of the block device at path, or an
// impossible one.
func statDev(path string) uint64 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return ^uint64(0)
	}
	return uint64(st.Rdev)
}

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo
// and /proc/swaps.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
