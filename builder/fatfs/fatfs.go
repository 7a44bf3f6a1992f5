// Package fatfs edits the FAT32 boot partition inside a disk image file, at
// a byte offset, with go-diskfs, and repairs what go-diskfs leaves behind so
// the result passes `fsck.fat -n`: new directories' `.` and `..` entries,
// clusters leaked by removes and truncations, empty files that keep a
// cluster, the FSInfo free count and next-free hint, and both FAT copies.
//
// It also works around go-diskfs v1.9.4's FAT quirks: reads go through one
// Read of the whole file (its partial-cluster path over-reads), each file is
// written with one Write (every Write rewrites both FATs), and an existing
// empty file is replaced rather than written into (go-diskfs would lose the
// data). File times are set explicitly, never taken from the clock or from
// SOURCE_DATE_EPOCH.
package fatfs

import (
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// FS is an open FAT32 filesystem inside an image. It is not safe for
// concurrent use. Close it to apply the fixups; an FS that was only read
// needs no Close but accepts one.
type FS struct {
	fat      *fat32.FileSystem
	r        io.ReaderAt
	w        io.WriterAt // nil when read-only
	offset   int64
	size     int64
	changed  bool
	newDirs  map[string]bool // lower-cased paths of directories created in this session
	written  map[string]bool // lower-cased paths of files written in this session
	closed   bool
	closeErr error
	broken   error // a panic during an edit: Close must not repair
}

// Entry is one directory entry as List returns it.
type Entry struct {
	Name      string // long name when there is one
	ShortName string // the 8.3 name; FAT lookups match it too
	Size      int64
	IsDir     bool
	ModTime   time.Time
}

// Open opens the FAT32 filesystem of size bytes at offset in f for reading
// and writing.
func Open(f *os.File, offset, size int64) (*FS, error) {
	return open(f, f, offset, size)
}

// OpenReadOnly opens the FAT32 filesystem of size bytes at offset in r for
// reading only; every write method fails.
func OpenReadOnly(r io.ReaderAt, offset, size int64) (*FS, error) {
	return open(r, nil, offset, size)
}

func open(r io.ReaderAt, w io.WriterAt, offset, size int64) (_ *FS, err error) {
	defer recoverPanic(&err)
	if offset < 0 || size <= 0 {
		return nil, fmt.Errorf("fat: bad partition range offset %d size %d", offset, size)
	}
	v, err := readVolume(r, offset)
	if err != nil {
		return nil, fmt.Errorf("fat: partition at byte %d: %w", offset, err)
	}
	if v.dataStart+int64(v.clusterCount)*int64(v.bytesPerCluster) > size {
		return nil, fmt.Errorf("fat: partition at byte %d: the filesystem (%d clusters of %d bytes) is larger than its %d-byte partition",
			offset, v.clusterCount, v.bytesPerCluster, size)
	}
	if err := v.checkChains(); err != nil {
		return nil, err
	}
	st := &storage{r: r, w: w, start: offset, end: offset + size}
	fs, err := fat32.Read(st, size, offset, 512)
	if err != nil {
		return nil, fmt.Errorf("fat: partition at byte %d: %w", offset, err)
	}
	return &FS{fat: fs, r: r, w: w, offset: offset, size: size,
		newDirs: map[string]bool{}, written: map[string]bool{}}, nil
}

// Label is the volume label, without padding.
func (f *FS) Label() (label string) {
	defer func() {
		if recover() != nil {
			label = ""
		}
	}()
	return strings.TrimSpace(f.fat.Label())
}

// clean turns a user path into go-diskfs's form: relative, slash-separated,
// no dot segments. The root is ".".
func clean(p string) (string, error) {
	p = strings.ReplaceAll(p, "\\", "/")
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", fmt.Errorf("fat: path %q leaves the filesystem", p)
		}
	}
	c := path.Clean("/" + p)
	if c == "/" {
		return ".", nil
	}
	return strings.TrimPrefix(c, "/"), nil
}

// Stat describes the file or directory at p.
func (f *FS) Stat(p string) (Entry, error) {
	c, err := clean(p)
	if err != nil {
		return Entry{}, err
	}
	if c == "." {
		return Entry{Name: "/", IsDir: true}, nil
	}
	// go-diskfs's Stat lists the parent, which fails with an unhelpful error
	// for a missing parent; List gives the same answer with ErrNotExist.
	entries, err := f.List(path.Dir(c))
	if err != nil {
		return Entry{}, err
	}
	base := path.Base(c)
	for _, e := range entries {
		if strings.EqualFold(e.Name, base) || strings.EqualFold(e.ShortName, base) {
			return e, nil
		}
	}
	return Entry{}, fmt.Errorf("fat: %s: %w", "/"+c, iofs.ErrNotExist)
}

// Exists says whether p names a file or directory.
func (f *FS) Exists(p string) bool {
	_, err := f.Stat(p)
	return err == nil
}

// List returns the entries of directory dir, sorted by name, without "."
// and "..".
func (f *FS) List(dir string) (_ []Entry, err error) {
	defer recoverPanic(&err)
	c, err := clean(dir)
	if err != nil {
		return nil, err
	}
	if c != "." {
		// go-diskfs reads a file as a directory without complaint.
		parent, err := f.Stat(c)
		if err != nil {
			return nil, err
		}
		if !parent.IsDir {
			return nil, fmt.Errorf("fat: %s is a file, not a directory", "/"+c)
		}
	}
	des, err := f.fat.ReadDir(c)
	if err != nil {
		return nil, fmt.Errorf("fat: list %s: %w", "/"+strings.TrimPrefix(c, "."), iofs.ErrNotExist)
	}
	out := make([]Entry, 0, len(des))
	for _, de := range des {
		info, err := de.Info()
		if err != nil {
			return nil, err
		}
		e := Entry{Name: de.Name(), Size: info.Size(), IsDir: de.IsDir(), ModTime: info.ModTime()}
		if s, ok := info.(interface{ ShortName() string }); ok {
			e.ShortName = s.ShortName()
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ReadFileAtMost is ReadFile for a file on a card nixpi did not write
// itself (inspect, report): one larger than max bytes is refused before it is
// read, so a damaged or hostile card cannot make nixpi fill its memory.
func (f *FS) ReadFileAtMost(p string, max int64) ([]byte, error) {
	e, err := f.Stat(p)
	if err != nil {
		return nil, err
	}
	if e.Size > max {
		return nil, fmt.Errorf("fat: %s is %d bytes, more than the %d such a file can legitimately be", "/"+strings.TrimPrefix(path.Clean("/"+p), "/"), e.Size, max)
	}
	return f.ReadFile(p)
}

// ReadFile returns the contents of the file at p.
func (f *FS) ReadFile(p string) (_ []byte, err error) {
	defer recoverPanic(&err)
	c, err := clean(p)
	if err != nil {
		return nil, err
	}
	e, err := f.Stat(c)
	if err != nil {
		return nil, err
	}
	if e.IsDir {
		return nil, fmt.Errorf("fat: %s is a directory", "/"+c)
	}
	if e.Size == 0 {
		return []byte{}, nil
	}
	fh, err := f.fat.OpenFile(c, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("fat: open %s: %w", "/"+c, err)
	}
	defer fh.Close()
	// One Read of exactly the file's size: go-diskfs over-reads past the
	// end of the file when a Read starts inside a cluster.
	data := make([]byte, e.Size)
	n, err := fh.Read(data)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("fat: read %s: %w", "/"+c, err)
	}
	if int64(n) != e.Size {
		return nil, fmt.Errorf("fat: read %s: got %d of %d bytes", "/"+c, n, e.Size)
	}
	return data, nil
}

// FreeBytes is the free space, counted from the FAT (not from FSInfo, which
// may be stale).
func (f *FS) FreeBytes() (_ int64, err error) {
	defer recoverPanic(&err)
	v, err := readVolume(f.r, f.offset)
	if err != nil {
		return 0, fmt.Errorf("fat: %w", err)
	}
	return int64(v.countFree()) * int64(v.bytesPerCluster), nil
}

func (f *FS) writable() error {
	if f.w == nil {
		return fmt.Errorf("fat: opened read-only")
	}
	if f.closed {
		return fmt.Errorf("fat: already closed")
	}
	return nil
}

// fatTime converts t to what a FAT directory entry can hold: UTC, 1980 or
// later (FAT has no time zone and starts in 1980).
func fatTime(t time.Time) (time.Time, error) {
	t = t.UTC()
	if t.Year() < 1980 || t.Year() > 2107 {
		return time.Time{}, fmt.Errorf("fat: time %s is outside what FAT can store (1980-2107)", t.Format(time.RFC3339))
	}
	return t, nil
}

// MkdirAll creates directory p and any missing parents, with mtime as their
// time. Existing directories are left as they are.
func (f *FS) MkdirAll(p string, mtime time.Time) (err error) {
	defer f.recoverWrite(&err)
	if err := f.writable(); err != nil {
		return err
	}
	c, err := clean(p)
	if err != nil {
		return err
	}
	if c == "." {
		return nil
	}
	t, err := fatTime(mtime)
	if err != nil {
		return err
	}
	parts := strings.Split(c, "/")
	for i := range parts {
		sub := strings.Join(parts[:i+1], "/")
		e, err := f.Stat(sub)
		if err == nil {
			if !e.IsDir {
				return fmt.Errorf("fat: mkdir %s: %s is a file", "/"+c, "/"+sub)
			}
			continue
		}
		if !errors.Is(err, iofs.ErrNotExist) {
			return err
		}
		f.changed = true
		if err := f.fat.Mkdir(sub); err != nil {
			return fmt.Errorf("fat: mkdir %s: %w", "/"+sub, err)
		}
		if err := f.fat.Chtimes(sub, t, t, t); err != nil {
			return fmt.Errorf("fat: set time of %s: %w", "/"+sub, err)
		}
		f.newDirs[strings.ToLower(sub)] = true
	}
	return nil
}

// WriteFile creates or replaces the file at p with data and sets its times
// to mtime. The parent directory must exist (see MkdirAll).
func (f *FS) WriteFile(p string, data []byte, mtime time.Time) (err error) {
	defer f.recoverWrite(&err)
	if err := f.writable(); err != nil {
		return err
	}
	c, err := clean(p)
	if err != nil {
		return err
	}
	if c == "." {
		return fmt.Errorf("fat: cannot write the root directory")
	}
	t, err := fatTime(mtime)
	if err != nil {
		return err
	}
	if int64(len(data)) > 0xffffffff {
		return fmt.Errorf("fat: %s: %d bytes is more than a FAT file can hold", "/"+c, len(data))
	}
	parent, err := f.Stat(path.Dir(c))
	if err != nil {
		return fmt.Errorf("fat: write %s: parent directory: %w", "/"+c, err)
	}
	if !parent.IsDir {
		return fmt.Errorf("fat: write %s: %s is a file", "/"+c, "/"+path.Dir(c))
	}
	flag := os.O_RDWR | os.O_CREATE
	existing, err := f.Stat(c)
	switch {
	case err == nil && existing.IsDir:
		return fmt.Errorf("fat: write %s: it is a directory", "/"+c)
	case err == nil && existing.Size == 0:
		// An empty file may have no cluster; go-diskfs would write the data
		// to a new chain it never records. Replace the entry instead.
		if err := f.fat.Remove(c); err != nil {
			return fmt.Errorf("fat: replace empty %s: %w", "/"+c, err)
		}
	case err == nil:
		flag |= os.O_TRUNC
	case !errors.Is(err, iofs.ErrNotExist):
		return err
	}
	f.changed = true
	f.written[strings.ToLower(c)] = true
	fh, err := f.fat.OpenFile(c, flag)
	if err != nil {
		return fmt.Errorf("fat: open %s for writing: %w", "/"+c, err)
	}
	if len(data) > 0 {
		// One Write: each Write rewrites both FATs and the directory.
		n, err := fh.Write(data)
		if err != nil {
			return fmt.Errorf("fat: write %s: %w", "/"+c, err)
		}
		if n != len(data) {
			return fmt.Errorf("fat: write %s: wrote %d of %d bytes", "/"+c, n, len(data))
		}
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("fat: close %s: %w", "/"+c, err)
	}
	if err := f.fat.Chtimes(c, t, t, t); err != nil {
		return fmt.Errorf("fat: set time of %s: %w", "/"+c, err)
	}
	return nil
}

// Remove deletes the file or empty directory at p. Its clusters are freed
// by Close (go-diskfs leaves them allocated).
func (f *FS) Remove(p string) (err error) {
	defer f.recoverWrite(&err)
	if err := f.writable(); err != nil {
		return err
	}
	c, err := clean(p)
	if err != nil {
		return err
	}
	if c == "." {
		return fmt.Errorf("fat: cannot remove the root directory")
	}
	if _, err := f.Stat(c); err != nil {
		return err
	}
	f.changed = true
	if err := f.fat.Remove(c); err != nil {
		return fmt.Errorf("fat: remove %s: %w", "/"+c, err)
	}
	delete(f.newDirs, strings.ToLower(c))
	delete(f.written, strings.ToLower(c))
	return nil
}

// Close applies the fixups when anything was written. The FS cannot be used
// afterwards. It does not close the underlying file.
func (f *FS) Close() error {
	if f.closed {
		return f.closeErr
	}
	f.closed = true
	switch {
	case f.broken != nil:
		f.closeErr = fmt.Errorf("fat: not repairing after an earlier failure: %w", f.broken)
	case f.w != nil && f.changed:
		func() {
			defer recoverPanic(&f.closeErr)
			f.closeErr = f.fixup()
		}()
	}
	return f.closeErr
}

// recoverPanic turns a panic inside go-diskfs (it has some on damaged
// filesystems) into an error.
func recoverPanic(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("fat: go-diskfs failed: %v; the filesystem may be damaged (check it with fsck.fat)", r)
	}
}

// recoverWrite is recoverPanic for edits: after a panic half-way through an
// edit the filesystem's state is unknown, so Close will not touch it.
func (f *FS) recoverWrite(err *error) {
	recoverPanic(err)
	if *err != nil && strings.HasPrefix((*err).Error(), "fat: go-diskfs failed") {
		f.broken = *err
	}
}

// storage is go-diskfs's view of the image: reads and, when w is set,
// writes, which must stay inside the partition, so the rest of the image
// (the partition table, the root filesystem) cannot change.
type storage struct {
	r          io.ReaderAt
	w          io.WriterAt
	start, end int64
	pos        int64
}

var _ backend.Storage = (*storage)(nil)

func (s *storage) ReadAt(p []byte, off int64) (int, error) { return s.r.ReadAt(p, off) }
func (s *storage) WriteAt(p []byte, off int64) (int, error) {
	if off < s.start || off+int64(len(p)) > s.end {
		return 0, fmt.Errorf("fat: write at byte %d (+%d) outside the partition", off, len(p))
	}
	return s.w.WriteAt(p, off)
}
func (s *storage) Read(p []byte) (int, error) {
	n, err := s.r.ReadAt(p, s.pos)
	s.pos += int64(n)
	return n, err
}
func (s *storage) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
		s.pos = offset
	case io.SeekCurrent:
		s.pos += offset
	case io.SeekEnd:
		s.pos = s.end + offset
	}
	return s.pos, nil
}
func (s *storage) Stat() (iofs.FileInfo, error) { return nil, filesystem.ErrNotSupported }
func (s *storage) Close() error                 { return nil }
func (s *storage) Sys() (*os.File, error)       { return nil, backend.ErrNotSuitable }
func (s *storage) Path() string                 { return "" }
func (s *storage) Writable() (backend.WritableFile, error) {
	if s.w == nil {
		return nil, backend.ErrIncorrectOpenMode
	}
	return s, nil
}
