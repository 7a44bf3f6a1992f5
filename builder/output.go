package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/renameio/v2"
	"golang.org/x/sys/unix"
)

// tempPattern names the temporary file next to OUT, so a leftover one (only
// possible after SIGKILL or a power cut) says what it is.
const tempPattern = ".nixpi-build-*.tmp"

// checkOutput refuses an OUT that would lose data: an existing file without
// force, the base image itself, a directory, or a missing directory.
func checkOutput(out, base string, force bool) error {
	if out == "" {
		return errors.New("no output path: pass --out OUT")
	}
	if isURL(base) {
		// Nothing local to overwrite.
	} else if same, err := samePath(out, base); err != nil {
		return err
	} else if same {
		return fmt.Errorf("output %q is the base image: nixpi never overwrites its input, choose another --out", out)
	}
	dir := filepath.Dir(out)
	if st, err := os.Stat(dir); err != nil {
		return fmt.Errorf("output directory %q: %w (create it first)", dir, err)
	} else if !st.IsDir() {
		return fmt.Errorf("output directory %q is not a directory", dir)
	}
	st, err := os.Stat(out)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("output %q: %w", out, err)
	case st.IsDir():
		return fmt.Errorf("output %q is a directory: pass a file name", out)
	case !st.Mode().IsRegular():
		return fmt.Errorf("output %q is not a regular file (a device?): nixpi build writes image files; flash them with dd or rpi-imager", out)
	case !force:
		return fmt.Errorf("output %q already exists: pass --force to replace it", out)
	}
	return nil
}

// samePath says whether a and b name the same file: equal absolute paths,
// or (both existing) the same inode, which catches links and bind mounts.
func samePath(a, b string) (bool, error) {
	absA, err := filepath.Abs(a)
	if err != nil {
		return false, err
	}
	absB, err := filepath.Abs(b)
	if err != nil {
		return false, err
	}
	if absA == absB {
		return true, nil
	}
	stA, errA := os.Stat(a)
	stB, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(stA, stB), nil
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// pendingOutput is OUT while it is being built: a temporary file in OUT's
// directory (so the final rename is atomic) that is removed unless Commit
// succeeds.
type pendingOutput struct {
	final string
	file  *os.File
	done  bool
}

func createPending(out string) (*pendingOutput, error) {
	f, err := os.CreateTemp(filepath.Dir(out), tempPattern)
	if err != nil {
		return nil, fmt.Errorf("create temporary output next to %q: %w", out, err)
	}
	return &pendingOutput{final: out, file: f}, nil
}

// Path is the temporary file's path.
func (p *pendingOutput) Path() string { return p.file.Name() }

// StartWriteback asks the kernel to begin writing what is in the page cache
// without waiting, so the fsync in Commit has little left to do.
func (p *pendingOutput) StartWriteback() {
	_ = unix.SyncFileRange(int(p.file.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}

// Discard removes the temporary file; after Commit it does nothing.
func (p *pendingOutput) Discard() {
	if p.done {
		return
	}
	p.done = true
	p.file.Close()
	os.Remove(p.file.Name())
}

// Commit syncs the temporary file, hashes it, renames it to OUT, and writes
// OUT.sha256 in sha256sum format. It returns OUT's sha256 in hex. Without
// force the rename refuses to replace an OUT that appeared since
// checkOutput looked.
func (p *pendingOutput) Commit(force bool) (string, error) {
	if p.done {
		return "", errors.New("output already committed or discarded")
	}
	f := p.file
	// Flushing to disk and hashing from the page cache use different
	// resources: doing them at once takes about the longer of the two.
	synced := make(chan error, 1)
	go func() { synced <- f.Sync() }()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	hashErr := hashSparse(h, f, size)
	if err := <-synced; err != nil {
		return "", fmt.Errorf("sync %q: %w", f.Name(), err)
	}
	if hashErr != nil {
		return "", fmt.Errorf("hash %q: %w", f.Name(), hashErr)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := f.Chmod(0o644); err != nil {
		return "", fmt.Errorf("chmod %q: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("close %q: %w", f.Name(), err)
	}
	if err := renameOutput(f.Name(), p.final, force); err != nil {
		return "", err
	}
	p.done = true
	if err := syncDir(filepath.Dir(p.final)); err != nil {
		return "", err
	}
	sidecar := fmt.Sprintf("%s  %s\n", sum, filepath.Base(p.final))
	if err := renameio.WriteFile(p.final+".sha256", []byte(sidecar), 0o644); err != nil {
		return "", fmt.Errorf("write %q: %w", p.final+".sha256", err)
	}
	return sum, nil
}

func renameOutput(from, to string, force bool) error {
	if force {
		if err := os.Rename(from, to); err != nil {
			return fmt.Errorf("rename %q to %q: %w", from, to, err)
		}
		return nil
	}
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("output %q appeared while building: pass --force to replace it", to)
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS):
		// The file system cannot rename without replacing; checkOutput
		// already looked, so fall back to a plain rename.
		if err := os.Rename(from, to); err != nil {
			return fmt.Errorf("rename %q to %q: %w", from, to, err)
		}
		return nil
	}
	return fmt.Errorf("rename %q to %q: %w", from, to, err)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %q: %w", dir, err)
	}
	return nil
}

// hashSparse feeds f's first size bytes to h, taking the holes' zeros from
// memory: reading a hole makes the kernel allocate and clear a page for
// every 4 KiB of it, which costs more than hashing the zeros.
func hashSparse(h io.Writer, f *os.File, size int64) error {
	buf := make([]byte, 1<<20)
	zeros := make([]byte, len(buf))
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) { // only a hole is left
			data = size
		} else if err != nil {
			// No SEEK_DATA on this file system: read everything.
			_, err := io.CopyBuffer(h, io.NewSectionReader(f, off, size-off), buf)
			return err
		}
		for ; off < data; off += int64(len(zeros)) {
			h.Write(zeros[:min(int64(len(zeros)), data-off)])
		}
		off = data
		if off >= size {
			break
		}
		hole, err := unix.Seek(fd, off, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		hole = min(hole, size)
		if _, err := io.CopyBuffer(h, io.NewSectionReader(f, off, hole-off), buf); err != nil {
			return err
		}
		off = hole
	}
	return nil
}
