// Package inputfile reads the files nixpi takes in whole (an install config,
// an EEPROM image, a checksum file) bounded by what each can legitimately be,
// so an endless input (a character device, a FIFO, a runaway file) is refused
// with a message instead of filling memory until the kernel kills nixpi.
package inputfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Read reads the regular file at path, at most max bytes; what names the
// kind of file for messages ("an install config"). Errors from opening the
// file wrap the fs error (fs.ErrNotExist stays testable).
func Read(path, what string, max int64) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
	// writer forever; on a regular file it changes nothing.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%q is %s, not a regular file: pass %s as a file", path, Kind(st.Mode()), what)
	}
	if st.Size() > max {
		return nil, tooLarge(path, what, max)
	}
	return ReadAll(f, path, what, max)
}

// ReadAll reads r (standard input, say) to its end, refusing more than max
// bytes; name says where r comes from, for messages.
func ReadAll(r io.Reader, name, what string, max int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(data)) > max {
		return nil, tooLarge(name, what, max)
	}
	return data, nil
}

// ErrTooLarge is wrapped by the error for an input over its bound.
var ErrTooLarge = errors.New("too large")

func tooLarge(name, what string, max int64) error {
	return fmt.Errorf("%s is %w: %s is at most %s; is it the right file?", quote(name), ErrTooLarge, what, size(max))
}

func quote(name string) string {
	if name == "standard input" {
		return name
	}
	return fmt.Sprintf("%q", name)
}

func size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// Kind names what a file that is not a regular one is, for messages:
// "a FIFO", "a character device".
func Kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "a special file"
}
