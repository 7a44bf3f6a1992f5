package baseimage

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"path"
	"strconv"
	"strings"

	"github.com/diskfs/go-diskfs/filesystem/ext4"
)

const ext4Magic = 0xef53

// rootFS reads files of the ext4 root filesystem, following symbolic links
// inside it (neither go-diskfs nor debugfs follows one in the middle of a
// path, and a link must never lead to the host's files).
type rootFS struct {
	rd rootReader
}

// inspectRoot reads os-release, fstab, the userland architecture and the
// systemd binary from partition 2: with go-diskfs in process, and, when
// that cannot read the filesystem or finds it wanting, again with debugfs,
// whose answer then stands.
func inspectRoot(ctx context.Context, r io.ReaderAt, b *Base, o *Options) error {
	p := b.Root
	sb := make([]byte, 2)
	if _, err := r.ReadAt(sb, p.Start+1024+56); err != nil {
		return fmt.Errorf("read superblock: %w", err)
	}
	if binary.LittleEndian.Uint16(sb) != ext4Magic {
		return fmt.Errorf("%w: partition 2 holds no ext2/3/4 filesystem", ErrNotLinuxRoot)
	}
	var readers []rootReader
	var diskfsErr error
	if o.Reader != ReaderDebugfs {
		fs, err := openDiskfs(r, p)
		if err == nil {
			readers = append(readers, diskfsReader{fs: fs})
		} else {
			diskfsErr = err
		}
	}
	if o.Reader != ReaderGoDiskfs {
		if dev := o.debugfsDevice(r, p); dev != "" {
			readers = append(readers, debugfsReader{ctx: ctx, runner: o.Runner, debugfs: o.Debugfs, device: dev})
		}
	}
	if len(readers) == 0 {
		if diskfsErr == nil {
			diskfsErr = errors.New("no ext4 reader")
		}
		return fmt.Errorf("%w: read ext4: %v; install e2fsprogs (debugfs) to read this filesystem", ErrNotLinuxRoot, diskfsErr)
	}
	var err error
	for _, rd := range readers {
		var info *Base
		info, err = identifyRoot(&rootFS{rd: rd})
		if err == nil {
			b.OSRelease, b.PrettyName, b.FATMount = info.OSRelease, info.PrettyName, info.FATMount
			b.Arch, b.ArchSource, b.Systemd = info.Arch, info.ArchSource, info.Systemd
			b.RootReader = rd.name()
			return nil
		}
	}
	return err
}

func openDiskfs(r io.ReaderAt, p Partition) (fs *ext4.FileSystem, err error) {
	defer guard(&err)
	return ext4.Read(storage(r, p.End()), p.Size, p.Start, sectorSize)
}

// identifyRoot fills in what the root filesystem says about the image.
func identifyRoot(root *rootFS) (*Base, error) {
	b := &Base{}
	err := identify(root, b)
	return b, err
}

func identify(root *rootFS, b *Base) error {
	osRelease, err := root.readFile("/etc/os-release")
	if errors.Is(err, iofs.ErrNotExist) {
		osRelease, err = root.readFile("/usr/lib/os-release")
	}
	if errors.Is(err, iofs.ErrNotExist) {
		return fmt.Errorf("%w: neither /etc/os-release nor /usr/lib/os-release exists", ErrNotLinuxRoot)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotLinuxRoot, err)
	}
	b.OSRelease = parseOSRelease(osRelease)
	b.PrettyName = b.OSRelease["PRETTY_NAME"]
	if b.PrettyName == "" {
		b.PrettyName = strings.TrimSpace(b.OSRelease["NAME"] + " " + b.OSRelease["VERSION"])
	}

	fstab, err := root.readFile("/etc/fstab")
	if errors.Is(err, iofs.ErrNotExist) {
		return fmt.Errorf("%w: /etc/fstab does not exist", ErrNotLinuxRoot)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotLinuxRoot, err)
	}
	if b.FATMount, err = fatMountPoint(string(fstab)); err != nil {
		return err
	}

	for _, p := range []string{"/usr/lib/systemd/systemd", "/lib/systemd/systemd"} {
		if root.exists(p) {
			b.Systemd = p
			break
		}
	}
	if b.Systemd == "" {
		return fmt.Errorf("%w: neither /usr/lib/systemd/systemd nor /lib/systemd/systemd exists (%s); "+
			"nixpi's first-boot hook runs through systemd", ErrNoSystemd, b.PrettyName)
	}

	dpkgStatus, dpkgErr := root.readFile("/var/lib/dpkg/status")
	if dpkgErr != nil && !isDebianFamily(b.OSRelease) {
		return fmt.Errorf("%w: %s (ID=%s) has no /var/lib/dpkg/status; nixpi needs a Debian-family image such as Raspberry Pi OS",
			ErrNotDebian, b.PrettyName, b.OSRelease["ID"])
	}
	if dpkgErr == nil {
		if arch := dpkgArch(dpkgStatus); arch != "" {
			b.Arch, b.ArchSource = arch, "/var/lib/dpkg/status"
		}
	}
	if b.Arch == "" {
		for _, p := range []string{"/usr/bin/true", "/bin/sh"} {
			data, err := root.readFile(p)
			if err != nil {
				continue
			}
			if arch, err := elfArch(data); err == nil {
				b.Arch, b.ArchSource = arch, p
				break
			}
		}
	}
	switch b.Arch {
	case "arm64", "armhf":
	case "":
		return fmt.Errorf("%w: found no Architecture in /var/lib/dpkg/status and no readable ELF /usr/bin/true or /bin/sh", ErrUnsupportedArch)
	default:
		return fmt.Errorf("%w: %s (from %s); nixpi needs an arm64 or armhf Raspberry Pi image", ErrUnsupportedArch, b.Arch, b.ArchSource)
	}
	return nil
}

// maxSymlinks bounds symbolic link resolution, as Linux does.
const maxSymlinks = 40

// resolve turns an absolute path into one without symbolic links, resolving
// them against the root filesystem (never the host's).
func (r *rootFS) resolve(p string) (string, error) {
	pending := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	resolved := ""
	for hops := 0; len(pending) > 0; {
		name := pending[0]
		pending = pending[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			resolved = path.Dir("/" + resolved)[1:]
			continue
		}
		next := path.Join(resolved, name)
		mode, _, err := r.rd.lstat(next)
		if err != nil {
			return "", err
		}
		if mode&iofs.ModeSymlink == 0 {
			resolved = next
			continue
		}
		if hops++; hops > maxSymlinks {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := r.rd.readLink(next)
		if err != nil {
			return "", fmt.Errorf("read link %s: %w", "/"+next, err)
		}
		if strings.HasPrefix(target, "/") {
			resolved = ""
		}
		pending = append(strings.Split(strings.Trim(target, "/"), "/"), pending...)
	}
	return resolved, nil
}

func (r *rootFS) exists(p string) bool {
	_, err := r.resolve(p)
	return err == nil
}

func (r *rootFS) readFile(p string) ([]byte, error) {
	resolved, err := r.resolve(p)
	if err != nil {
		return nil, err
	}
	if resolved == "" {
		return nil, fmt.Errorf("%s is the root directory", p)
	}
	mode, _, err := r.rd.lstat(resolved)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if !mode.IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	data, err := r.rd.readFile(resolved)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return data, nil
}

// parseOSRelease reads os-release(5): KEY=value lines, values optionally
// quoted with shell-style escapes.
func parseOSRelease(data []byte) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if len(value) >= 2 && (value[0] == '"' || value[0] == '\'') && value[len(value)-1] == value[0] {
			if value[0] == '"' {
				if u, err := strconv.Unquote(value); err == nil {
					value = u
				} else {
					value = value[1 : len(value)-1]
				}
			} else {
				value = value[1 : len(value)-1]
			}
		}
		m[key] = value
	}
	return m
}

func isDebianFamily(osRelease map[string]string) bool {
	if osRelease["ID"] == "debian" {
		return true
	}
	for _, id := range strings.Fields(osRelease["ID_LIKE"]) {
		if id == "debian" {
			return true
		}
	}
	return false
}

// fatMountPoint finds where fstab mounts the vfat boot partition.
func fatMountPoint(fstab string) (string, error) {
	var vfat []string
	for _, line := range strings.Split(fstab, "\n") {
		fields := strings.Fields(line)
		if len(fields) < 3 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if fields[2] == "vfat" || fields[2] == "msdos" {
			vfat = append(vfat, fields[1])
		}
	}
	for _, want := range []string{"/boot/firmware", "/boot"} {
		for _, m := range vfat {
			if m == want {
				return m, nil
			}
		}
	}
	if len(vfat) > 0 {
		return "", fmt.Errorf("%w: /etc/fstab mounts the FAT partition at %s, not at /boot/firmware or /boot", ErrNotLinuxRoot, vfat[0])
	}
	return "", fmt.Errorf("%w: /etc/fstab mounts no vfat partition (looked for /boot/firmware and /boot)", ErrNotLinuxRoot)
}

// dpkgArch is the architecture of the dpkg package itself (dpkg's native
// architecture), else the first architecture that is not "all".
func dpkgArch(status []byte) string {
	var pkg, arch, firstArch string
	flush := func() string {
		if arch != "" && arch != "all" {
			if pkg == "dpkg" {
				return arch
			}
			if firstArch == "" {
				firstArch = arch
			}
		}
		pkg, arch = "", ""
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if a := flush(); a != "" {
				return a
			}
			continue
		}
		if v, ok := strings.CutPrefix(line, "Package:"); ok {
			pkg = strings.TrimSpace(v)
		} else if v, ok := strings.CutPrefix(line, "Architecture:"); ok {
			arch = strings.TrimSpace(v)
		}
	}
	if a := flush(); a != "" {
		return a
	}
	return firstArch
}

// elfArch names the Debian architecture of an ELF file from its header.
func elfArch(data []byte) (string, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return "", err
	}
	switch {
	case f.Machine == elf.EM_AARCH64 && f.Class == elf.ELFCLASS64:
		return "arm64", nil
	case f.Machine == elf.EM_ARM && f.Class == elf.ELFCLASS32:
		const efARMABIFloatHard = 0x400
		flags := binary.LittleEndian.Uint32(data[0x24:0x28])
		if flags&efARMABIFloatHard != 0 {
			return "armhf", nil
		}
		return "armel", nil
	default:
		return strings.ToLower(strings.TrimPrefix(f.Machine.String(), "EM_")), nil
	}
}
