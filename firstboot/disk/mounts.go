package disk

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	MajMin     string // st_dev of the filesystem ("179:2"; "0:NN" for btrfs)
	Root       string // path inside the filesystem that is mounted ("/@nix")
	MountPoint string
	FSType     string
	Source     string // "/dev/sda3", "/dev/root", "proc"
	Options    string // per-mount options
	SuperOpts  string // filesystem options ("subvol=/@nix" for btrfs)
}

// ParseMountInfo parses /proc/self/mountinfo.
func ParseMountInfo(data []byte) ([]Mount, error) {
	var mounts []Mount
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 6 || sep < 0 || sep+2 >= len(f) {
			return nil, fmt.Errorf("mountinfo line %d: unexpected format: %q", line, sc.Text())
		}
		m := Mount{
			MajMin:     f[2],
			Root:       unescapeOctal(f[3]),
			MountPoint: unescapeOctal(f[4]),
			Options:    f[5],
			FSType:     f[sep+1],
			Source:     unescapeOctal(f[sep+2]),
		}
		if sep+3 < len(f) {
			m.SuperOpts = f[sep+3]
		}
		mounts = append(mounts, m)
	}
	return mounts, sc.Err()
}

// unescapeOctal undoes the kernel's \040-style escaping of spaces, tabs,
// newlines and backslashes in mountinfo and /proc/swaps.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ReadMountInfo reads root/proc/self/mountinfo.
func ReadMountInfo(root string) ([]Mount, error) {
	data, err := os.ReadFile(filepath.Join(root, "proc/self/mountinfo"))
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	return ParseMountInfo(data)
}

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

// ParseSwaps returns the device paths of active swap areas in /proc/swaps.
func ParseSwaps(data []byte) []string {
	var devs []string
	for i, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) == 0 {
			continue // header
		}
		devs = append(devs, unescapeOctal(f[0]))
	}
	return devs
}

// ReadSwaps reads root/proc/swaps; a missing file means no swap.
func ReadSwaps(root string) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(root, "proc/swaps"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read active swap: %w", err)
	}
	return ParseSwaps(data), nil
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

// ReadAllMountInfo reads the mount table of every mount namespace under
// root/proc: a filesystem mounted only inside a container or a private
// namespace (unshare -m) is mounted all the same. Each namespace is read
// once, through the first process in it; processes that exit meanwhile are
// skipped. root/proc/self/mountinfo must be readable.
func ReadAllMountInfo(root string) ([]Mount, error) {
	mounts, err := ReadMountInfo(root)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	if ns, err := os.Readlink(filepath.Join(root, "proc/self/ns/mnt")); err == nil {
		seen[ns] = true
	}
	pids, _ := filepath.Glob(filepath.Join(root, "proc/[0-9]*"))
	for _, dir := range pids {
		ns, err := os.Readlink(filepath.Join(dir, "ns/mnt"))
		if err != nil || seen[ns] {
			continue // gone, a kernel thread, or a namespace already read
		}
		seen[ns] = true
		data, err := os.ReadFile(filepath.Join(dir, "mountinfo"))
		if err != nil {
			continue
		}
		more, err := ParseMountInfo(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "mountinfo"), err)
		}
		mounts = append(mounts, more...)
	}
	return mounts, nil
}

// LoopBacking is a loop device and the file it reads from.
type LoopBacking struct {
	Loop string // "/dev/loop5"
	File string // its backing file as the kernel names it
}

// LoopBackings lists every attached loop device's backing file from sysfs
// under root.
func LoopBackings(root string) []LoopBacking {
	files, _ := filepath.Glob(filepath.Join(root, "sys/block/loop*/loop/backing_file"))
	var out []LoopBacking
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue // detached meanwhile
		}
		name := filepath.Base(filepath.Dir(filepath.Dir(f)))
		out = append(out, LoopBacking{Loop: "/dev/" + name, File: strings.TrimSuffix(string(data), "\n")})
	}
	return out
}
