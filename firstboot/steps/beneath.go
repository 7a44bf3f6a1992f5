package steps

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nixpi/nixpi/firstboot/engine"
)

// beneath is a directory (the SSD's root at /mnt) whose paths are opened
// with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS): a symbolic link in any
// component is refused, not followed, so a /mnt/etc/nixos that points at the
// card (or anywhere else) cannot make a step write outside the SSD.
type beneath struct {
	name string // the device path, for messages ("/mnt")
	fd   int
}

func openSSD(env *engine.Env) (*beneath, error) {
	fd, err := unix.Open(env.Path(installRoot), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the SSD's root %q: %w", installRoot, err)
	}
	return &beneath{name: installRoot, fd: fd}, nil
}

func (b *beneath) Close() error { return unix.Close(b.fd) }

// rel turns a path on the installed system ("/etc/nixos") into one under b.
func rel(p string) string {
	if p = strings.TrimPrefix(path.Clean("/"+p), "/"); p == "" {
		return "."
	}
	return p
}

func (b *beneath) openat2(p string, flags int, mode uint32) (int, error) {
	return unix.Openat2(b.fd, rel(p), &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Mode:    uint64(mode),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS,
	})
}

// open is openat2 with a refusal that names the link in the way.
func (b *beneath) open(p string, flags int, mode uint32) (int, error) {
	fd, err := b.openat2(p, flags, mode)
	if err == nil {
		return fd, nil
	}
	if errors.Is(err, unix.ELOOP) {
		if link, target := b.firstLink(p); link != "" {
			return -1, engine.WithHint(fmt.Errorf("%q on the SSD is a symbolic link to %q: nixpi follows no link under %s, so it writes nothing outside the SSD", path.Join(b.name, link), target, b.name),
				fmt.Sprintf("replace the link with a directory or file of its own on the SSD (rm %s), then delete nixpi/FAILED on the card to run again", path.Join(b.name, link)))
		}
	}
	return -1, &fs.PathError{Op: "open", Path: path.Join(b.name, rel(p)), Err: err}
}

// firstLink names the first component of p that is a symbolic link, and
// its target; "" when none is (any more).
func (b *beneath) firstLink(p string) (link, target string) {
	dir := "."
	for _, name := range strings.Split(rel(p), "/") {
		d, err := b.openat2(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return "", ""
		}
		var st unix.Stat_t
		err = unix.Fstatat(d, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			buf := make([]byte, 4096)
			n, _ := unix.Readlinkat(d, name, buf)
			unix.Close(d)
			return path.Join("/", dir, name), string(buf[:max(n, 0)])
		}
		unix.Close(d)
		if err != nil {
			return "", ""
		}
		dir = path.Join(dir, name)
	}
	return "", ""
}

// ReadFile reads p.
func (b *beneath) ReadFile(p string) ([]byte, error) {
	fd, err := b.open(p, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), path.Join(b.name, rel(p)))
	defer f.Close()
	return io.ReadAll(f)
}

// Lstat describes p itself (a link at its last component is described, not
// followed); an error wrapping fs.ErrNotExist when p or a parent is absent.
func (b *beneath) Lstat(p string) (fs.FileMode, error) {
	d, err := b.open(path.Dir("/"+rel(p)), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(d)
	var st unix.Stat_t
	if err := unix.Fstatat(d, path.Base(p), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return 0, &fs.PathError{Op: "lstat", Path: path.Join(b.name, rel(p)), Err: err}
	}
	mode := fs.FileMode(st.Mode & 0o777)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	default:
		mode |= fs.ModeIrregular
	}
	return mode, nil
}

// MkdirAll makes the directory p and its parents, one component at a time
// from its parent's descriptor, so no link is followed on the way.
func (b *beneath) MkdirAll(p string, perm uint32) error {
	dir := "."
	for _, name := range strings.Split(rel(p), "/") {
		d, err := b.open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		err = unix.Mkdirat(d, name, perm)
		unix.Close(d)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return &fs.PathError{Op: "mkdir", Path: path.Join(b.name, dir, name), Err: err}
		}
		dir = path.Join(dir, name)
	}
	d, err := b.open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	return unix.Close(d)
}

// Chmod sets p's mode exactly (the umask does not apply).
func (b *beneath) Chmod(p string, mode uint32) error {
	fd, err := b.open(p, unix.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, mode); err != nil {
		return &fs.PathError{Op: "chmod", Path: path.Join(b.name, rel(p)), Err: err}
	}
	return nil
}

// WriteFile replaces p with data of exactly mode: a temporary file in the
// same directory, fsynced, renamed over p (a link at p is replaced, not
// followed), then the directory fsynced. A power cut leaves the old file or
// the new.
func (b *beneath) WriteFile(p string, data []byte, mode uint32) error {
	dir, name := path.Dir("/"+rel(p)), path.Base(p)
	full := path.Join(b.name, rel(p))
	d, err := b.open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(d)
	tmp := "." + name + ".nixpi-tmp"
	// A power cut may have left one; O_EXCL below must not meet it.
	if err := unix.Unlinkat(d, tmp, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return &fs.PathError{Op: "remove", Path: full, Err: err}
	}
	fd, err := unix.Openat(d, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return &fs.PathError{Op: "create", Path: full, Err: err}
	}
	f := os.NewFile(uintptr(fd), full)
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Chmod(fs.FileMode(mode)), f.Sync(), f.Close()); err != nil {
		unix.Unlinkat(d, tmp, 0)
		return fmt.Errorf("write %q: %w", full, err)
	}
	if err := unix.Renameat(d, tmp, d, name); err != nil {
		return &fs.PathError{Op: "rename", Path: full, Err: err}
	}
	if err := unix.Fsync(d); err != nil {
		return &fs.PathError{Op: "sync", Path: path.Join(b.name, rel(dir)), Err: err}
	}
	return nil
}
