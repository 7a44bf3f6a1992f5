package builder

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
	"github.com/nixpi/nixpi/builder/source"
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
	if source.IsURL(base) {
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

// Discard removes the temporary file; after Commit it does nothing.
func (p *pendingOutput) Discard() {
	if p.done {
		return
	}
	p.done = true
	p.file.Close()
	os.Remove(p.file.Name())
}

// Commit syncs the temporary file, renames it to OUT, and writes
// OUT.sha256 in sha256sum format. sum is the file's sha256 in hex when the
// caller hashed it already; when empty, Commit hashes it. It returns OUT's
// sha256. Without force the rename refuses to replace an OUT that appeared
// since checkOutput looked.
func (p *pendingOutput) Commit(sum string, force bool) (string, error) {
	if p.done {
		return "", errors.New("output already committed or discarded")
	}
	f := p.file
	// Flushing to disk and hashing from the page cache use different
	// resources: doing them at once takes about the longer of the two.
	synced := make(chan error, 1)
	go func() { synced <- f.Sync() }()
	var hashErr error
	if sum == "" {
		sum, hashErr = hashFile(f)
	}
	if err := <-synced; err != nil {
		return "", fmt.Errorf("sync %q: %w", f.Name(), err)
	}
	if hashErr != nil {
		return "", hashErr
	}
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

// hashFile is the sha256 of the whole of f, in hex.
func hashFile(f *os.File) (string, error) {
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	x, err := newImageHasher(f.Name())
	if err != nil {
		return "", err
	}
	defer x.Close()
	if err := x.hashTo(st.Size()); err != nil {
		return "", fmt.Errorf("hash %q: %w", f.Name(), err)
	}
	return x.Sum(), nil
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
