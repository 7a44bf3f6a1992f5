package hook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/cavaliergopher/cpio"
)

// ExtractFile installs the newc cpio archive at archivePath into the
// directory rootDir. It checks every entry before it writes anything, so a
// bad archive changes nothing. Allowed: regular files, directories and
// symlinks, named relative to the root; refused: absolute names, ".."
// components, devices, FIFOs, sockets, hard links, set-user/group-ID bits,
// duplicate names, entries under a symlink of the archive, and relative
// symlink targets that lead out of the root.
//
// Files are written atomically (a temp file in the same directory, fsync,
// rename) with the archive's mode; an identical file already there is left
// alone. Missing directories are created with the archive's mode (0755 for
// parents the archive does not list); existing ones keep theirs, since they
// belong to the system. All access goes through os.Root, so no symlink
// already on the disk can lead a write out of rootDir.
func ExtractFile(ctx context.Context, archivePath, rootDir string, logf func(string, ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	f, err := os.Open(archivePath)
	if err != nil {
		return fmt.Errorf("payload: %w; the card was not made by nixpi build, or its nixpi/ folder was changed", err)
	}
	defer f.Close()
	entries, err := checkArchive(f)
	if err != nil {
		return fmt.Errorf("payload %q refused, nothing installed: %w; write the card again with nixpi build", archivePath, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("payload %q: %w", archivePath, err)
	}
	root, err := openRoot(rootDir)
	if err != nil {
		return err
	}
	defer root.Close()
	x := &extractor{root: root, logf: logf, chown: os.Geteuid() == 0}
	r := cpio.NewReader(f)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("payload %q: %w", archivePath, err)
		}
		name, ok := entries[hdr.Name]
		if !ok {
			continue // ".", checked and skipped
		}
		if err := x.entry(name, hdr, r); err != nil {
			return fmt.Errorf("payload %q: install /%s: %w", archivePath, name, err)
		}
	}
	return nil
}

func openRoot(dir string) (*os.Root, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open root filesystem: %w", err)
	}
	return root, nil
}

// checkArchive reads every header and refuses the archive if any entry is
// not allowed. It returns the clean name of each entry to install, by its
// name in the archive.
func checkArchive(r io.Reader) (map[string]string, error) {
	names := map[string]string{}
	seen := map[string]bool{}
	symlinks := map[string]bool{}
	cr := cpio.NewReader(r)
	for {
		hdr, err := cr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("not a readable newc cpio archive: %w", err)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return nil, err
		}
		if name == "" {
			continue // the archive's own root, "."
		}
		if seen[name] {
			return nil, fmt.Errorf("entry %q appears twice", hdr.Name)
		}
		seen[name] = true
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			if symlinks[dir] {
				return nil, fmt.Errorf("entry %q is under %q, a symlink in the same archive", hdr.Name, dir)
			}
		}
		if hdr.Mode&(cpio.ModeSetuid|cpio.ModeSetgid) != 0 {
			return nil, fmt.Errorf("entry %q has the set-user-ID or set-group-ID bit, which a payload never needs", hdr.Name)
		}
		switch hdr.Mode & cpio.ModeType {
		case cpio.TypeReg:
			if hdr.Links > 1 {
				return nil, fmt.Errorf("entry %q is a hard link (%d links); payload files must be plain files", hdr.Name, hdr.Links)
			}
			// Read the data now: a truncated archive fails here, before
			// anything is written.
			if n, err := io.Copy(io.Discard, cr); err != nil || n != hdr.Size {
				return nil, fmt.Errorf("entry %q is cut short (%d of %d bytes): the archive is truncated", hdr.Name, n, hdr.Size)
			}
		case cpio.TypeDir:
		case cpio.TypeSymlink:
			if err := checkSymlink(name, hdr.Linkname); err != nil {
				return nil, fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
			symlinks[name] = true
		default:
			return nil, fmt.Errorf("entry %q is a %s; only regular files, directories and symlinks may be installed", hdr.Name, typeName(hdr.Mode))
		}
		names[hdr.Name] = name
	}
	if len(names) == 0 {
		return nil, errors.New("the archive is empty")
	}
	return names, nil
}

// cleanName turns an archive name into a path relative to the root ("" for
// the root itself), refusing any name that could land outside it.
func cleanName(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("an entry has an empty name")
	}
	if strings.HasPrefix(raw, "/") {
		return "", fmt.Errorf("entry %q has an absolute name; payload names are relative to the root", raw)
	}
	for _, part := range strings.Split(raw, "/") {
		if part == ".." {
			return "", fmt.Errorf("entry %q contains \"..\", which could lead out of the root", raw)
		}
	}
	name := path.Clean(raw)
	if name == "." {
		return "", nil
	}
	return name, nil
}

// checkSymlink refuses a relative target that leads above the root when the
// link is created at name. Absolute targets are resolved by the device
// within its own root filesystem, so they cannot lead out of it.
func checkSymlink(name, target string) error {
	if target == "" {
		return errors.New("symlink without a target")
	}
	if strings.ContainsRune(target, 0) {
		return errors.New("symlink target contains a NUL byte")
	}
	if path.IsAbs(target) {
		return nil
	}
	resolved := path.Join(path.Dir(name), target)
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return fmt.Errorf("symlink target %q leads out of the root", target)
	}
	return nil
}

func typeName(mode cpio.FileMode) string {
	switch mode & cpio.ModeType {
	case cpio.TypeChar:
		return "character device"
	case cpio.TypeBlock:
		return "block device"
	case cpio.TypeFifo:
		return "FIFO"
	case cpio.TypeSocket:
		return "socket"
	}
	return fmt.Sprintf("file of type %#o", uint32(mode&cpio.ModeType))
}

// extractor installs checked entries under root.
type extractor struct {
	root  *os.Root
	logf  func(string, ...any)
	chown bool // running as root: give entries the archive's owner
}

func (x *extractor) entry(name string, hdr *cpio.Header, data io.Reader) error {
	perm := fs.FileMode(hdr.Mode & cpio.ModePerm)
	if dir := path.Dir(name); dir != "." {
		if err := x.mkdirAll(dir); err != nil {
			return err
		}
	}
	switch hdr.Mode & cpio.ModeType {
	case cpio.TypeDir:
		return x.dir(name, perm, hdr)
	case cpio.TypeSymlink:
		return x.symlink(name, hdr)
	default:
		return x.file(name, perm, hdr, data)
	}
}

// mkdirAll creates the missing parents of an entry, 0755 like the
// builder's parent entries whatever the umask.
func (x *extractor) mkdirAll(dir string) error {
	if fi, err := x.root.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	if parent := path.Dir(dir); parent != "." {
		if err := x.mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := x.root.Mkdir(dir, 0o755); err != nil {
		return err
	}
	if err := x.root.Chmod(dir, 0o755); err != nil {
		return err
	}
	x.logf("created /%s", dir)
	return nil
}

func (x *extractor) dir(name string, perm fs.FileMode, hdr *cpio.Header) error {
	fi, err := x.root.Stat(name)
	switch {
	case err == nil && fi.IsDir():
		return nil // the system's own directory: keep its mode and owner
	case err == nil:
		return fmt.Errorf("exists and is not a directory (%s); remove it", fi.Mode().Type())
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if err := x.root.Mkdir(name, perm); err != nil {
		return err
	}
	if err := x.root.Chmod(name, perm); err != nil { // not narrowed by the umask
		return err
	}
	if x.chown {
		if err := x.root.Lchown(name, hdr.Uid, hdr.Guid); err != nil {
			return err
		}
	}
	x.logf("created /%s (%v)", name, perm)
	return nil
}

func (x *extractor) symlink(name string, hdr *cpio.Header) error {
	fi, err := x.root.Lstat(name)
	switch {
	case err == nil && fi.Mode()&fs.ModeSymlink != 0:
		if target, err := x.root.Readlink(name); err == nil && target == hdr.Linkname {
			x.logf("/%s -> %s already in place", name, hdr.Linkname)
			return nil
		}
	case err == nil && fi.IsDir():
		return errors.New("exists and is a directory; remove it")
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return err
	}
	tmp := tempName(name)
	if err := x.removeStale(tmp); err != nil {
		return err
	}
	if err := x.root.Symlink(hdr.Linkname, tmp); err != nil {
		return err
	}
	if x.chown {
		if err := x.root.Lchown(tmp, hdr.Uid, hdr.Guid); err != nil {
			return err
		}
	}
	if err := x.replace(tmp, name); err != nil {
		return err
	}
	x.logf("linked /%s -> %s", name, hdr.Linkname)
	return nil
}

func (x *extractor) file(name string, perm fs.FileMode, hdr *cpio.Header, data io.Reader) error {
	content, err := io.ReadAll(io.LimitReader(data, hdr.Size))
	if err != nil {
		return err
	}
	if int64(len(content)) != hdr.Size {
		return fmt.Errorf("cut short (%d of %d bytes)", len(content), hdr.Size)
	}
	if x.unchanged(name, perm, hdr, content) {
		x.logf("/%s already in place", name)
		return nil
	}
	tmp := tempName(name)
	if err := x.removeStale(tmp); err != nil {
		return err
	}
	f, err := x.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	err = writeAndSync(f, content, perm)
	if err == nil && x.chown {
		err = f.Chown(hdr.Uid, hdr.Guid)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = x.replace(tmp, name)
	}
	if err != nil {
		x.root.Remove(tmp)
		return err
	}
	x.logf("installed /%s (%v, %d bytes)", name, perm, len(content))
	return nil
}

func writeAndSync(f *os.File, content []byte, perm fs.FileMode) error {
	if _, err := f.Write(content); err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil { // not narrowed by the umask
		return err
	}
	return f.Sync()
}

// unchanged: a regular file with the same mode, owner and bytes is already
// at name.
func (x *extractor) unchanged(name string, perm fs.FileMode, hdr *cpio.Header, content []byte) bool {
	fi, err := x.root.Lstat(name)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != perm || fi.Size() != hdr.Size {
		return false
	}
	if x.chown && !ownedBy(fi, hdr.Uid, hdr.Guid) {
		return false
	}
	have, err := x.root.ReadFile(name)
	return err == nil && bytes.Equal(have, content)
}

// replace renames tmp over name and syncs the directory, so the new entry
// survives a power cut.
func (x *extractor) replace(tmp, name string) error {
	if fi, err := x.root.Lstat(name); err == nil && fi.IsDir() {
		x.root.Remove(tmp)
		return errors.New("exists and is a directory; remove it")
	}
	if err := x.root.Rename(tmp, name); err != nil {
		return err
	}
	d, err := x.root.Open(path.Dir(name))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// removeStale removes a temp file a power cut left behind.
func (x *extractor) removeStale(tmp string) error {
	if err := x.root.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// tempName is next to name, so the rename stays on one filesystem, and
// fixed, so a leftover from an interrupted run is found and replaced.
func tempName(name string) string {
	return path.Join(path.Dir(name), "."+path.Base(name)+".nixpi-new")
}
