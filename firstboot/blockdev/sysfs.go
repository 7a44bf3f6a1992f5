package blockdev

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Disk is a whole disk as sysfs describes it.
type Disk struct {
	Name string // kernel name: "sdb", "mmcblk0", "loop3"
	Dev  Dev
	// Node is the path it was found through; the exclusive opens open it,
	// and check that it still is Dev.
	Node string
	Size int64
	// LogicalBlock is the smallest unit the disk writes (O_DIRECT alignment).
	LogicalBlock int64
	Removable    bool   // sysfs says so, or it sits on USB or an MMC host
	Bus          string // "usb", "mmc", "loop", "device-mapper", or ""
	Model        string // vendor and model, or what backs a loop device
	Serial       string
	Partitions   []Partition
	// Sys is its sysfs directory, under the root it was read from.
	Sys  string
	root string
}

// Partition is one partition of a Disk.
type Partition struct {
	Name   string
	Number int
	Dev    Dev
	Size   int64
}

// DevPath is the disk's node in /dev, as the kernel names it there.
func (d *Disk) DevPath() string { return "/dev/" + d.Name }

// PartitionError is a device that is a partition, where a whole disk is
// wanted.
type PartitionError struct {
	Path   string // as given
	Number int
	Disk   string // the whole disk's /dev path
}

func (e *PartitionError) Error() string {
	return fmt.Sprintf("%q is partition %d of %q", e.Path, e.Number, e.Disk)
}

// ProbeNode is Probe of the block device at node (a /dev path or a
// symbolic link to one, as the user gave it).
func ProbeNode(root, node string) (*Disk, error) {
	dev, err := NodeDev(node)
	if err != nil {
		return nil, err
	}
	return Probe(root, dev, node)
}

// Probe reads what sysfs under root says of the whole disk dev, found
// through node. A partition is refused with a *PartitionError.
func Probe(root string, dev Dev, node string) (*Disk, error) {
	sys, err := sysDir(root, dev)
	if err != nil {
		return nil, fmt.Errorf("device %q: %w", node, err)
	}
	d := &Disk{Name: filepath.Base(sys), Dev: dev, Node: node, Sys: sys, root: root}
	if n := readAttr(sys, "partition"); n != "" {
		num, _ := strconv.Atoi(n)
		return nil, &PartitionError{Path: node, Number: num, Disk: "/dev/" + filepath.Base(filepath.Dir(sys))}
	}
	sectors, err := strconv.ParseInt(readAttr(sys, "size"), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("device %q: size in sysfs: %w", node, err)
	}
	d.Size = sectors * 512 // sysfs counts 512-byte sectors whatever the disk's
	d.LogicalBlock, _ = strconv.ParseInt(readAttr(sys, "queue/logical_block_size"), 10, 64)
	d.LogicalBlock = max(d.LogicalBlock, 512)
	// Where the device sits in the device tree says its bus.
	rel := strings.TrimPrefix(sys, filepath.Clean(root))
	switch {
	case strings.Contains(rel, "/usb"):
		d.Bus = "usb"
	case strings.Contains(rel, "/mmc"):
		d.Bus = "mmc"
	case strings.HasPrefix(d.Name, "loop"):
		d.Bus = "loop"
	case strings.HasPrefix(d.Name, "dm-"):
		d.Bus = "device-mapper"
	}
	d.Removable = readAttr(sys, "removable") == "1" || d.Bus == "usb" || d.Bus == "mmc"
	d.Model = strings.Join(strings.Fields(readAttr(sys, "device/vendor")+" "+readAttr(sys, "device/model")+" "+readAttr(sys, "device/name")), " ")
	if backing := readAttr(sys, "loop/backing_file"); backing != "" {
		d.Model = "loop device of " + backing
	}
	if name := readAttr(sys, "dm/name"); name != "" {
		d.Model = "device-mapper " + name
	}
	d.Serial = readAttr(sys, "device/serial")
	// A USB disk's serial is its USB device's, a few levels up.
	for dir, i := sys, 0; d.Serial == "" && d.Bus == "usb" && i < 8; dir, i = filepath.Dir(dir), i+1 {
		d.Serial = readAttr(dir, "serial")
	}
	d.Partitions = partitions(sys)
	return d, nil
}

// sysDir is the sysfs directory of dev under root.
func sysDir(root string, dev Dev) (string, error) {
	link := filepath.Join(root, "sys/dev/block", dev.String())
	sys, err := filepath.EvalSymlinks(link)
	if err != nil {
		return "", fmt.Errorf("no sysfs entry for block device %s (%s): %w", dev, link, err)
	}
	return sys, nil
}

// partitions lists the partitions in a disk's sysfs directory, in order.
func partitions(sys string) []Partition {
	entries, _ := os.ReadDir(sys)
	var out []Partition
	for _, e := range entries {
		p := filepath.Join(sys, e.Name())
		num, err := strconv.Atoi(readAttr(p, "partition"))
		if err != nil {
			continue
		}
		dev, err := ParseDev(readAttr(p, "dev"))
		if err != nil {
			continue
		}
		sectors, _ := strconv.ParseInt(readAttr(p, "size"), 10, 64)
		out = append(out, Partition{Name: e.Name(), Number: num, Dev: dev, Size: sectors * 512})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out
}

// Attr is a sysfs attribute of the disk ("queue/discard_max_bytes"),
// trimmed; empty when it is missing.
func (d *Disk) Attr(name string) string { return readAttr(d.Sys, name) }

func readAttr(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
