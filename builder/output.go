package builder

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/renameio/v2"
	"golang.org/x/sys/unix"

	"github.com/nixpi/nixpi/builder/source"
	"github.com/nixpi/nixpi/firstboot/config"
)

// tempPattern names the temporary file next to OUT, so a leftover one (only
// possible after SIGKILL or a power cut) says what it is.
const tempPattern = ".nixpi-build-*.tmp"

// Input is a file an output may never replace; What names it in messages
// ("the base image", "IMAGE").
type Input struct{ What, Path string }

// CheckOutput applies the rules every output file of nixpi follows: it is
// none of the inputs, not a directory or a device, in a directory that
// exists, and not an existing file unless force. URL inputs are skipped.
func CheckOutput(out string, force bool, inputs ...Input) error {
	if out == "" {
		return errors.New("no output path: pass --out OUT")
	}
	if err := notAnInput(out, "", inputs); err != nil {
		return err
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
		return fmt.Errorf("output %q is not a regular file (a device?): nixpi writes files; copy one to a device with dd or rpi-imager", out)
	case !force:
		return fmt.Errorf("output %q already exists: pass --force to replace it", out)
	}
	return nil
}

// notAnInput refuses out when it is one of inputs (URLs are skipped:
// nothing local to overwrite). beside, when set, says out is a file
// written beside --out (OUT.sha256).
func notAnInput(out, beside string, inputs []Input) error {
	for _, in := range inputs {
		if in.Path == "" || source.IsURL(in.Path) {
			continue
		}
		if same, err := SamePath(out, in.Path); err != nil {
			return err
		} else if same {
			if beside != "" {
				return fmt.Errorf("output %q, written beside --out %q, is %s: nixpi never overwrites its input, choose another --out", out, beside, in.What)
			}
			return fmt.Errorf("output %q is %s: nixpi never overwrites its input, choose another --out", out, in.What)
		}
	}
	return nil
}

// inputs are the files a build reads: the base, the checksum file beside
// it, and the config.
func (o Options) inputs() []Input {
	return []Input{
		{"the base image", o.Base},
		{"the base image's checksum file", o.Base + ".sha256"},
		{"the install config", o.Config},
	}
}

// checkOutput is CheckOutput for a build's OUT, and neither OUT nor a
// file written beside it (OUT.sha256, OUT.bmap) is one of its inputs.
func checkOutput(opts Options) error {
	inputs := opts.inputs()
	if err := CheckOutput(opts.Out, opts.Force, inputs...); err != nil {
		return err
	}
	for _, ext := range []string{".sha256", ".bmap"} { // Commit's, Build's
		if err := notAnInput(opts.Out+ext, opts.Out, inputs); err != nil {
			return err
		}
	}
	return nil
}

// WriteFile writes a small output (not a card) by the same rules as OUT:
// under a temporary name next to path, synced, then renamed over it, so an
// interruption leaves the old file or the new one; an existing path is
// replaced only with force. Its mode follows the umask. Call CheckOutput
// first.
func WriteFile(path string, data []byte, force bool) error {
	p, err := createPending(path, modeShared)
	if err != nil {
		return err
	}
	defer p.Discard()
	if _, err := p.file.Write(data); err != nil {
		return fmt.Errorf("write %q: %w", p.Path(), err)
	}
	if err := p.file.Sync(); err != nil {
		return fmt.Errorf("sync %q: %w", p.Path(), err)
	}
	return p.install(force)
}

// SamePath says whether a and b name the same file: the same inode
// (device and number) when both exist, which catches hard and symbolic
// links and bind mounts, else equal cleaned absolute paths.
func SamePath(a, b string) (bool, error) {
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

// Modes of OUT: a card that carries a secret (a Wi-Fi key, a password hash)
// is for its owner only; any other file follows the umask, like cp's.
const (
	modePrivate os.FileMode = 0o600
	modeShared  os.FileMode = 0o666
)

// createPending creates OUT's temporary file with mode (less the umask),
// so a private card is never readable by others, not even while written.
func createPending(out string, mode os.FileMode) (*pendingOutput, error) {
	dir := filepath.Dir(out)
	for {
		name := filepath.Join(dir, strings.Replace(tempPattern, "*", strconv.FormatUint(uint64(rand.Uint32()), 10), 1))
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, mode)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("create temporary output next to %q: %w", out, err)
		}
		// Held until the process ends, however it ends: the next build
		// tells a live build's file from a killed one's by it.
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			os.Remove(name)
			return nil, fmt.Errorf("lock temporary output %q: %w", name, err)
		}
		return &pendingOutput{final: out, file: f}, nil
	}
}

// staleAfter is how old an unlocked temporary file must be before it is
// removed: a file this old cannot be one a build has just created and not
// locked yet.
const staleAfter = time.Minute

// removeLeftovers removes the temporary files that builds killed by
// SIGKILL or a power cut left in OUT's directory: those no live process
// holds locked. A recent unlocked one is only named. It returns one line
// per file, for the log.
func removeLeftovers(out string) []string {
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(out), tempPattern))
	var lines []string
	for _, name := range matches {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		st, statErr := f.Stat()
		locked := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil
		switch {
		case locked || statErr != nil || !st.Mode().IsRegular():
			// Another build is writing it (or it is not ours to judge).
		case time.Since(st.ModTime()) < staleAfter:
			lines = append(lines, fmt.Sprintf("%s was left by an interrupted build: the next build removes it, or remove it yourself", name))
		case os.Remove(name) == nil:
			lines = append(lines, fmt.Sprintf("removed %s (%s), left by a build that was killed", name, config.Size(st.Size()).Approx()))
		}
		f.Close()
	}
	return lines
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
		sum, hashErr = HashFile(f)
	}
	if err := <-synced; err != nil {
		return "", fmt.Errorf("sync %q: %w", f.Name(), err)
	}
	if hashErr != nil {
		return "", hashErr
	}
	if err := p.install(force); err != nil {
		return "", err
	}
	sidecar := fmt.Sprintf("%s  %s\n", sum, filepath.Base(p.final))
	if err := renameio.WriteFile(p.final+".sha256", []byte(sidecar), 0o644); err != nil {
		return "", fmt.Errorf("write %q: %w", p.final+".sha256", err)
	}
	return sum, nil
}

// install closes the synced temporary file and renames it to its final
// name, which it replaces only with force.
func (p *pendingOutput) install(force bool) error {
	f := p.file
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %q: %w", f.Name(), err)
	}
	if err := renameOutput(f.Name(), p.final, force); err != nil {
		return err
	}
	p.done = true
	return syncDir(filepath.Dir(p.final))
}

// HashFile is the sha256 of the whole of f, in hex; its holes' zeros are
// hashed from memory, not read.
func HashFile(f *os.File) (string, error) {
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
