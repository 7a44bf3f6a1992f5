package blockdev

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Mount is one line of a mountinfo file.
type Mount struct {
	MajMin     string // st_dev of the filesystem ("179:2"; "0:NN" for btrfs)
	Root       string // path inside the filesystem that is mounted ("/@nix")
	MountPoint string
	FSType     string
	Source     string // "/dev/sda3", "/dev/root", "proc"
	Options    string // per-mount options
	SuperOpts  string // filesystem options ("subvol=/@nix" for btrfs)
	// PID is a process in whose mount namespace the mount is, when that is
	// not the reader's own (0): a container's, or one made by unshare -m.
	PID int
}

// ParseMountInfo parses a /proc/PID/mountinfo file.
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

// ReadMountInfo reads root/proc/self/mountinfo: this process's mount
// namespace.
func ReadMountInfo(root string) ([]Mount, error) {
	data, err := os.ReadFile(filepath.Join(root, "proc/self/mountinfo"))
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	return ParseMountInfo(data)
}

// ReadAllMountInfo reads the mount table of every mount namespace under
// root/proc, this process's first: a filesystem mounted only inside a
// container or a private namespace (unshare -m) is mounted all the same.
// Each namespace is read once, through the first process in it; processes
// that exit meanwhile are skipped. root/proc/self/mountinfo must be
// readable.
func ReadAllMountInfo(root string) ([]Mount, error) {
	mounts, err := ReadMountInfo(root)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	if ns, err := os.Readlink(filepath.Join(root, "proc/self/ns/mnt")); err == nil {
		seen[ns] = true
	}
	dirs, _ := filepath.Glob(filepath.Join(root, "proc/[0-9]*"))
	for _, dir := range dirs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue // not a process
		}
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
		for i := range more {
			more[i].PID = pid
		}
		mounts = append(mounts, more...)
	}
	return mounts, nil
}

// ReadSwaps returns the paths of the active swap areas in root/proc/swaps
// (a device node or a swap file); a missing file means no swap.
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

// ParseSwaps returns the paths in a /proc/swaps file.
func ParseSwaps(data []byte) []string {
	var paths []string
	for i, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) == 0 {
			continue // header
		}
		paths = append(paths, unescapeOctal(f[0]))
	}
	return paths
}
