package qemu

import (
	"context"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/nixpi/nixpi/builder/baseimage"
)

// Extlinux is an extlinux.conf as U-Boot's pxe parser (boot/pxe_utils.c)
// reads it.
type Extlinux struct {
	// Default is the label DEFAULT (or ONTIMEOUT) names, the last one
	// given; else the first label with MENU DEFAULT.
	Default string
	Labels  []ExtlinuxLabel
	// Timeout is TIMEOUT, in tenths of a second; Menu: a MENU line outside
	// the labels, which makes U-Boot show its menu and wait Timeout for a
	// choice.
	Timeout int
	Menu    bool
}

// ExtlinuxLabel is one LABEL entry.
type ExtlinuxLabel struct {
	Name, MenuLabel string
	Kernel, Initrd  string // LINUX or KERNEL; INITRD or APPEND's initrd=
	Append          string
	FDT, FDTDir     string // FDT or DEVICETREE; FDTDIR or DEVICETREEDIR
	menuDefault     bool   // MENU DEFAULT
}

// labelKeywords are the keywords that continue a LABEL entry; any other
// ends it, as in U-Boot's parse_label.
var labelKeywords = map[string]bool{
	"menu": true, "kernel": true, "linux": true, "append": true, "initrd": true,
	"fdt": true, "devicetree": true, "fdtdir": true, "devicetreedir": true,
	"fdtoverlays": true, "localboot": true, "ipappend": true, "kaslrseed": true,
}

// ParseExtlinux reads an extlinux.conf: keywords in any case, each value
// the rest of its line, # comments at the start of a line.
func ParseExtlinux(text string) *Extlinux {
	conf := &Extlinux{}
	var label *ExtlinuxLabel
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		word, rest := line, ""
		if i := strings.IndexAny(line, " \t"); i >= 0 {
			word, rest = line[:i], line[i+1:]
		}
		keyword, value := strings.ToLower(word), strings.TrimSpace(rest)
		if label != nil && labelKeywords[keyword] {
			label.set(keyword, value)
			continue
		}
		if label != nil {
			conf.Labels = append(conf.Labels, *label)
			label = nil
		}
		switch keyword {
		case "label":
			label = &ExtlinuxLabel{Name: value}
		case "default", "ontimeout":
			conf.Default = value
		case "timeout":
			conf.Timeout, _ = strconv.Atoi(strings.Fields(value + " 0")[0])
		case "menu":
			conf.Menu = true
		}
	}
	if label != nil {
		conf.Labels = append(conf.Labels, *label)
	}
	if conf.Default == "" {
		for _, l := range conf.Labels {
			if l.menuDefault {
				conf.Default = l.Name
				break
			}
		}
	}
	return conf
}

func (l *ExtlinuxLabel) set(keyword, value string) {
	switch keyword {
	case "menu":
		sub, rest, _ := strings.Cut(value, " ")
		switch strings.ToLower(sub) {
		case "label":
			l.MenuLabel = strings.TrimSpace(rest)
		case "default":
			l.menuDefault = true
		}
	case "kernel", "linux":
		// "FILE#config" names a FIT configuration; the file is before it.
		l.Kernel, _, _ = strings.Cut(value, "#")
	case "append":
		l.Append = value
		if _, v, ok := strings.Cut(" "+value, " initrd="); ok && l.Initrd == "" {
			l.Initrd, _, _ = strings.Cut(v, " ")
		}
	case "initrd":
		if l.Initrd == "" {
			l.Initrd = value
		}
	case "fdt", "devicetree":
		if l.FDT == "" {
			l.FDT = value
		}
	case "fdtdir", "devicetreedir":
		if l.FDTDir == "" {
			l.FDTDir = value
		}
	}
}

// BootOrder is the order U-Boot tries the labels in (handle_pxe_menu): the
// default one, then every other in file order. missingDefault is a DEFAULT
// that names no label ("Missing default"); U-Boot goes on to the others.
func (c *Extlinux) BootOrder() (labels []ExtlinuxLabel, missingDefault string) {
	first := -1
	for i, l := range c.Labels {
		if c.Default != "" && l.Name == c.Default {
			first = i
			break
		}
	}
	if c.Default != "" && first < 0 {
		missingDefault = c.Default
	}
	if first >= 0 {
		labels = append(labels, c.Labels[first])
	}
	for i, l := range c.Labels {
		if i != first {
			labels = append(labels, l)
		}
	}
	return labels, missingDefault
}

// WaitsAtMenu says whether U-Boot stops at its menu for someone to choose:
// with a MENU line it prompts, and a TIMEOUT of at most 0 (U-Boot rounds
// tenths up to seconds; 0 waits for a key) never runs out on a Pi nobody
// types at.
func (c *Extlinux) WaitsAtMenu() bool {
	return c.Menu && (c.Timeout+9)/10 <= 0
}

// rpi4FDTFile is the device tree U-Boot looks for in FDTDIR on a Pi 4 B
// (its $fdtfile, board/raspberrypi/rpi).
const rpi4FDTFile = "broadcom/bcm2711-rpi-4-b.dtb"

// extlinuxPaths are where U-Boot's distro boot looks on a partition.
var extlinuxPaths = []string{"/extlinux/extlinux.conf", "/boot/extlinux/extlinux.conf"}

// ubootBoot plays U-Boot's boot scan: the card (mmc) first, then the SSD
// (usb), partition 1 of each, /extlinux/extlinux.conf or
// /boot/extlinux/extlinux.conf; each label in BootOrder until one loads.
func ubootBoot(ctx context.Context, plan *BootPlan, started string, dev bootDevices, out kernelCopies) (*BootPlan, error) {
	var tried []string
	devices := []struct {
		name string
		open func() (*Card, error)
	}{
		{"the card", func() (*Card, error) { return dev.card, nil }},
		{"the SSD", dev.ssd},
	}
	for _, d := range devices {
		fat, err := d.open()
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", d.name, err))
			continue
		}
		if why, err := ubootSkipsPartition1(fat.Path); err != nil {
			return nil, err
		} else if why != "" {
			tried = append(tried, d.name+": "+why)
			continue
		}
		for _, confPath := range extlinuxPaths {
			text, why, err := readNonEmpty(ctx, fat, confPath)
			if err != nil {
				return nil, err
			}
			if why != "" {
				continue
			}
			conf := ParseExtlinux(string(text))
			where := d.name + "'s " + confPath
			if conf.WaitsAtMenu() {
				tried = append(tried, fmt.Sprintf("%s: U-Boot waits at its menu for a choice (MENU with TIMEOUT %d)", where, conf.Timeout))
				continue
			}
			labels, missing := conf.BootOrder()
			if missing != "" {
				plan.Notes = append(plan.Notes, fmt.Sprintf("U-Boot: %s: Missing default: %s", where, missing))
			}
			for _, l := range labels {
				why, err := loadLabel(ctx, plan, fat, path.Dir(confPath), l, out)
				if err != nil {
					return nil, err
				}
				if why == "" {
					plan.Via = fmt.Sprintf("%s started U-Boot; %s, label %s", started, where, l.Name)
					return plan, nil
				}
				tried = append(tried, fmt.Sprintf("%s: label %s: %s", where, l.Name, why))
			}
			if len(labels) == 0 {
				tried = append(tried, where+": no LABEL")
			}
		}
	}
	if len(tried) == 0 {
		tried = append(tried, "no extlinux/extlinux.conf on the card or the SSD")
	}
	plan.NoBoot = fmt.Sprintf("%s started U-Boot, which found nothing to boot: %s", started, strings.Join(tried, "; "))
	return plan, nil
}

// ubootSkipsPartition1 says why U-Boot's boot scan would not look at
// partition 1 of the MBR disk image at path, or "" when it would. Its
// distro boot (scan_dev_for_boot_part: "part list -bootable", else
// partition 1) and bootstd (bootdev_find_in_blk: first_bootable) alike scan
// only the bootable partitions when there are any, and partition 1 when
// there are none; on an MBR a partition is bootable with the active flag
// (0x80) or type 0xef (disk/part_dos.c, get_bootable). Which partition a
// GPT's scan takes is not modelled: its partition 1 is the ESP, bootable by
// type, and the emulation reads only partition 1.
func ubootSkipsPartition1(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	table, err := baseimage.ReadTable(f)
	if err != nil || table.GPT {
		return "", nil // OpenSSDBoot/OpenCard already read the partition
	}
	var bootable []string
	for _, p := range table.Partitions {
		if p.Bootable || p.Type == 0xef {
			if p.Index == 1 {
				return "", nil
			}
			bootable = append(bootable, strconv.Itoa(p.Index))
		}
	}
	if len(bootable) == 0 {
		return "", nil
	}
	return fmt.Sprintf("U-Boot scans only the bootable partitions (MBR active flag or type 0xef): %s, not partition 1 with the FAT", strings.Join(bootable, ", ")), nil
}

// loadLabel does what U-Boot's label_boot does before it jumps: the initrd,
// then the kernel, then the device tree (FDT must load; from FDTDIR,
// $fdtfile may be missing: U-Boot then boots with the firmware's). A file
// that is missing or empty skips the label; why says how.
func loadLabel(ctx context.Context, plan *BootPlan, fat *Card, bootDir string, l ExtlinuxLabel, out kernelCopies) (string, error) {
	resolve := func(p string) string {
		if strings.HasPrefix(p, "/") {
			return path.Clean(p)
		}
		return path.Join(bootDir, p)
	}
	if l.Kernel == "" {
		return "no LINUX or KERNEL", nil
	}
	initrd := ""
	if l.Initrd != "" {
		initrd = out.path("initrd")
		if why, err := copyNonEmpty(ctx, fat, resolve(l.Initrd), initrd); err != nil || why != "" {
			return "INITRD " + l.Initrd + ": " + why, err
		}
	}
	removeAll := func(paths ...string) {
		for _, p := range paths {
			if p != "" {
				os.Remove(p)
			}
		}
	}
	kernel := out.path("kernel")
	if why, err := copyNonEmpty(ctx, fat, resolve(l.Kernel), kernel); err != nil || why != "" {
		removeAll(initrd)
		return "LINUX " + l.Kernel + ": " + why, err
	}
	switch {
	case l.FDT != "":
		if _, why, err := readNonEmpty(ctx, fat, resolve(l.FDT)); err != nil || why != "" {
			removeAll(initrd, kernel)
			return "FDT " + l.FDT + ": " + why, err
		}
	case l.FDTDir != "":
		dtb := path.Join(resolve(l.FDTDir), rpi4FDTFile)
		if _, why, err := readNonEmpty(ctx, fat, dtb); err != nil {
			return "", err
		} else if why != "" {
			plan.Notes = append(plan.Notes, fmt.Sprintf("U-Boot: label %s: FDTDIR %s: %s: it boots with the firmware's device tree", l.Name, l.FDTDir, why))
		}
	}
	plan.Kernel, plan.Initrd = kernel, initrd
	// The Pi's consoles become the virt machine's one serial console, as
	// for cmdline.txt; no APPEND leaves the kernel only that.
	plan.Cmdline = "console=ttyAMA0"
	if strings.TrimSpace(l.Append) != "" {
		var err error
		if plan.Cmdline, err = GuestCmdline(l.Append); err != nil {
			return "", err
		}
	}
	return "", nil
}
