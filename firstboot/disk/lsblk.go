// Package disk reads what the device service needs to know about block
// devices (lsblk, wipefs, sfdisk, /dev/disk/by-id; whether anything uses a
// disk, and the mount tables, are firstboot/blockdev's) and plans the target disk's layout: partition geometry and
// the GUIDs/UUIDs derived from the config and the disk's identity, so a rerun
// or a resume after a power cut writes exactly the same thing.
//
// Every command goes through a system.Runner; every file is read under a root
// the caller passes, so all of it runs against recorded outputs in tests.
package disk

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/nixpi/nixpi/firstboot/system"
)

// Device is one block device as lsblk reports it, with its partitions and
// holders as Children.
type Device struct {
	Name      string   `json:"name"`
	KName     string   `json:"kname"`
	Path      string   `json:"path"`
	Type      string   `json:"type"` // disk, part, loop, crypt, lvm, raid1, rom, ...
	MajMin    string   `json:"maj:min"`
	Size      flexInt  `json:"size"`
	LogSec    flexInt  `json:"log-sec"`
	Tran      string   `json:"tran"`
	Serial    string   `json:"serial"`
	Model     string   `json:"model"`
	Vendor    string   `json:"vendor"`
	WWN       string   `json:"wwn"`
	RM        flexBool `json:"rm"`
	RO        flexBool `json:"ro"`
	PTType    string   `json:"pttype"`
	PTUUID    string   `json:"ptuuid"`
	FSType    string   `json:"fstype"`
	Label     string   `json:"label"`
	UUID      string   `json:"uuid"`
	PartUUID  string   `json:"partuuid"`
	PartLabel string   `json:"partlabel"`
	// Mountpoints merges lsblk's "mountpoints" (util-linux 2.37+) and
	// "mountpoint" (older); "[SWAP]" marks active swap.
	Mountpoints []string `json:"-"`
	Children    []Device `json:"children"`
}

// SizeBytes is the device size in bytes.
func (d *Device) SizeBytes() int64 { return int64(d.Size) }

// SectorSize is the logical sector size (512 when lsblk did not say).
func (d *Device) SectorSize() int64 {
	if d.LogSec <= 0 {
		return 512
	}
	return int64(d.LogSec)
}

// DevPath is the /dev path of the device.
func (d *Device) DevPath() string {
	if d.Path != "" {
		return d.Path
	}
	return "/dev/" + d.Name
}

// Walk calls fn for d and every descendant.
func (d *Device) Walk(fn func(*Device)) {
	fn(d)
	for i := range d.Children {
		d.Children[i].Walk(fn)
	}
}

// UnmarshalJSON merges the two spellings of the mount point column.
func (d *Device) UnmarshalJSON(b []byte) error {
	type plain Device
	var aux struct {
		plain
		Mountpoint  *string   `json:"mountpoint"`
		Mountpoints []*string `json:"mountpoints"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*d = Device(aux.plain)
	seen := map[string]bool{}
	add := func(p *string) {
		if p != nil && *p != "" && !seen[*p] {
			seen[*p] = true
			d.Mountpoints = append(d.Mountpoints, *p)
		}
	}
	add(aux.Mountpoint)
	for _, p := range aux.Mountpoints {
		add(p)
	}
	return nil
}

// flexInt accepts a JSON number, a numeric string (older lsblk) or null.
type flexInt int64

func (n *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "null" || s == "" {
		*n = 0
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("not a whole number: %s", b)
	}
	*n = flexInt(v)
	return nil
}

// flexBool accepts true/false, "1"/"0" (older lsblk) or null.
type flexBool bool

func (v *flexBool) UnmarshalJSON(b []byte) error {
	switch strings.Trim(string(b), `"`) {
	case "true", "1":
		*v = true
	case "false", "0", "null", "":
		*v = false
	default:
		return fmt.Errorf("not a boolean: %s", b)
	}
	return nil
}

// ParseLsblk parses the output of `lsblk -J -b -O`.
func ParseLsblk(data []byte) ([]Device, error) {
	var out struct {
		Blockdevices []Device `json:"blockdevices"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("parse lsblk output: %w", err)
	}
	return out.Blockdevices, nil
}

// List runs `lsblk -J -b -O` for the given devices (all when none).
func List(ctx context.Context, run system.Runner, lsblk string, devs ...string) ([]Device, error) {
	argv := append([]string{lsblk, "-J", "-b", "-O"}, devs...)
	out, err := run.Output(ctx, argv...)
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	return ParseLsblk(out)
}

// Find returns the device in the tree whose path, name or maj:min equals key.
func Find(devs []Device, key string) *Device {
	for i := range devs {
		var found *Device
		devs[i].Walk(func(d *Device) {
			if found == nil && (d.DevPath() == key || d.Name == key || d.KName == key || d.MajMin == key) {
				found = d
			}
		})
		if found != nil {
			return found
		}
	}
	return nil
}

// TopOf returns the top-level device (the whole disk) whose tree contains a
// device with the given maj:min or path, or nil.
func TopOf(devs []Device, key string) *Device {
	for i := range devs {
		if Find(devs[i:i+1], key) != nil {
			return &devs[i]
		}
	}
	return nil
}

// PartitionNode is the kernel's name for partition n of disk: "p" goes
// between when the disk name ends in a digit (/dev/loop0p1, /dev/mmcblk0p1,
// /dev/nvme0n1p1), not otherwise (/dev/sda1).
func PartitionNode(disk string, n int) string {
	if disk != "" && disk[len(disk)-1] >= '0' && disk[len(disk)-1] <= '9' {
		return fmt.Sprintf("%sp%d", disk, n)
	}
	return fmt.Sprintf("%s%d", disk, n)
}
