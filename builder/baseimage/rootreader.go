package baseimage

import (
	"context"
	"fmt"
	iofs "io/fs"
	"regexp"
	"strconv"
	"strings"

	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"github.com/nixpi/nixpi/firstboot/system"
)

// rootReader reads single inodes of the root filesystem by a path with no
// symbolic links in it ("" is the root directory; paths are relative).
// rootFS resolves links on top of it.
type rootReader interface {
	// lstat describes the inode at p without following a final link.
	lstat(p string) (mode iofs.FileMode, size int64, err error)
	readLink(p string) (string, error)
	readFile(p string) ([]byte, error)
	name() string
}

// diskfsReader reads with go-diskfs, in process. Measured on this machine
// (go-diskfs v1.9.4): it reads ext4 with metadata_csum, as Raspberry Pi OS
// Bookworm and later make it, but refuses ext4 without metadata_csum ("invalid
// checksum type 0", older pi-gen images) and panics on inline_data. Every
// call recovers a panic into an error, so callers can fall back to debugfs.
type diskfsReader struct {
	fs *ext4.FileSystem
}

func (d diskfsReader) name() string { return "go-diskfs" }

func guard(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("go-diskfs ext4 reader failed: %v", r)
	}
}

func (d diskfsReader) lstat(p string) (mode iofs.FileMode, size int64, err error) {
	defer guard(&err)
	if p == "" {
		return iofs.ModeDir | 0o755, 0, nil
	}
	info, err := d.fs.Stat(p)
	if err != nil {
		return 0, 0, fmt.Errorf("/%s: %w", p, iofs.ErrNotExist)
	}
	return info.Mode(), info.Size(), nil
}

func (d diskfsReader) readLink(p string) (target string, err error) {
	defer guard(&err)
	return d.fs.ReadLink(p)
}

func (d diskfsReader) readFile(p string) (data []byte, err error) {
	defer guard(&err)
	return d.fs.ReadFile(p)
}

// debugfsReader reads with e2fsprogs' debugfs, opened read-only (-c) on the
// image file at the partition's offset, one request per call through the
// runner. It reads every ext4 feature set e2fsprogs knows.
type debugfsReader struct {
	ctx     context.Context
	runner  system.Runner
	debugfs string
	device  string // "image?offset=N"
}

func (d debugfsReader) name() string { return "debugfs" }

var (
	statType   = regexp.MustCompile(`Type: (\w+)`)
	statMode   = regexp.MustCompile(`Mode:\s+(0[0-7]+)`)
	statSize   = regexp.MustCompile(`Size: (\d+)\n`)
	statTarget = regexp.MustCompile(`Fast link dest: "(.*)"\n`)
)

// request runs one debugfs request about p. debugfs parses the request
// line itself, so paths that could break out of its quoting are refused.
func (d debugfsReader) request(cmd, p string) ([]byte, error) {
	if strings.ContainsAny(p, "\"\\") || strings.IndexFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return nil, fmt.Errorf("path %q has characters nixpi does not pass to debugfs", "/"+p)
	}
	return d.runner.Output(d.ctx, d.debugfs, "-c", "-R", fmt.Sprintf(`%s "/%s"`, cmd, p), d.device)
}

func (d debugfsReader) stat(p string) (string, error) {
	out, err := d.request("stat", p)
	if err != nil {
		return "", err
	}
	if len(out) == 0 {
		// debugfs says "File not found" on stderr and exits 0.
		return "", fmt.Errorf("/%s: %w", p, iofs.ErrNotExist)
	}
	return string(out), nil
}

func (d debugfsReader) lstat(p string) (iofs.FileMode, int64, error) {
	out, err := d.stat(p)
	if err != nil {
		return 0, 0, err
	}
	t, m, s := statType.FindStringSubmatch(out), statMode.FindStringSubmatch(out), statSize.FindStringSubmatch(out)
	if t == nil || m == nil || s == nil {
		return 0, 0, fmt.Errorf("debugfs stat /%s: unexpected output %.200q", p, out)
	}
	perm, _ := strconv.ParseUint(m[1], 8, 32)
	size, _ := strconv.ParseInt(s[1], 10, 64)
	mode := iofs.FileMode(perm) & iofs.ModePerm
	switch t[1] {
	case "regular":
	case "directory":
		mode |= iofs.ModeDir
	case "symlink":
		mode |= iofs.ModeSymlink
	default:
		mode |= iofs.ModeIrregular
	}
	return mode, size, nil
}

func (d debugfsReader) readLink(p string) (string, error) {
	out, err := d.stat(p)
	if err != nil {
		return "", err
	}
	if m := statTarget.FindStringSubmatch(out); m != nil {
		return m[1], nil
	}
	// A long target lives in a data block, which cat prints.
	target, err := d.request("cat", p)
	if err != nil {
		return "", err
	}
	return string(target), nil
}

func (d debugfsReader) readFile(p string) ([]byte, error) {
	_, size, err := d.lstat(p)
	if err != nil {
		return nil, err
	}
	data, err := d.request("cat", p)
	if err != nil {
		return nil, err
	}
	if int64(len(data)) != size {
		return nil, fmt.Errorf("debugfs cat /%s: got %d of %d bytes", p, len(data), size)
	}
	return data, nil
}
