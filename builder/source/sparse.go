package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

const (
	// pageSize is the hole granularity: all-zero 4 KiB pages (aligned to
	// the file offset) are skipped, which every Linux filesystem turns
	// into holes.
	pageSize = 4096
	// copyChunk is the unit read from decompressors; a multiple of pageSize.
	copyChunk = 1 << 20
)

// isZeros says whether p is all zeros: its first byte is, and every byte
// equals the one before it (one memcmp, no buffer of zeros to compare with).
func isZeros(p []byte) bool {
	return len(p) == 0 || p[0] == 0 && bytes.Equal(p[1:], p[:len(p)-1])
}

// Sink is what Stream writes the image into: a regular file, or anything
// that takes the image's data runs in order (an *os.File is one).
type Sink interface {
	WriteAt(p []byte, off int64) (int, error)
	// Truncate sets the image's size, once its bytes are all written.
	Truncate(size int64) error
	Name() string // for messages
}

// writeSparse writes p at off in f, which must read as zeros there (a fresh
// or truncated file): zero pages are skipped rather than written, and
// runs of data pages go out in one write.
func writeSparse(f Sink, off int64, p []byte) error {
	run := -1 // start of the pending run of data pages in p
	flush := func(end int) error {
		if run < 0 {
			return nil
		}
		_, err := f.WriteAt(p[run:end], off+int64(run))
		run = -1
		return err
	}
	for i := 0; i < len(p); {
		// Pages are aligned to the file offset, not to p.
		end := i + pageSize - int((off+int64(i))%pageSize)
		end = min(end, len(p))
		if isZeros(p[i:end]) {
			if err := flush(i); err != nil {
				return writeError{fmt.Errorf("write %q: %w", f.Name(), err)}
			}
		} else if run < 0 {
			run = i
		}
		i = end
	}
	if err := flush(len(p)); err != nil {
		return writeError{fmt.Errorf("write %q: %w", f.Name(), err)}
	}
	return nil
}

// copySparse streams r into f from offset 0, sparsely, then sets f's size
// to the number of bytes copied (a trailing hole still counts). image, when
// not nil, receives every byte.
func copySparse(ctx context.Context, f Sink, r io.Reader, image hash.Hash) (int64, error) {
	buf := make([]byte, copyChunk)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return off, err
		}
		n, err := fill(r, buf)
		if n > 0 {
			if image != nil {
				image.Write(buf[:n])
			}
			if werr := writeSparse(f, off, buf[:n]); werr != nil {
				return off, werr
			}
			off += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return off, err
		}
	}
	if err := f.Truncate(off); err != nil {
		return off, writeError{fmt.Errorf("set size of %q: %w", f.Name(), err)}
	}
	return off, nil
}

// fill reads until buf is full or r fails; unlike io.ReadFull it passes a
// clean io.EOF through, so it stays distinct from truncated input
// (io.ErrUnexpectedEOF from a decompressor).
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// WalkData calls fn(data, hole) for each run [data, hole) of f's bytes
// [off, end) that holds data, in order, leaving out the holes. Where the
// file system cannot tell (no SEEK_DATA or SEEK_HOLE) it is all data. The
// position of f's descriptor moves.
func WalkData(f *os.File, off, end int64, fn func(data, hole int64) error) error {
	fd := int(f.Fd())
	for pos := off; pos < end; {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole is left
		}
		if err != nil {
			data = pos
		}
		if data >= end {
			return nil
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = end
		}
		hole = min(hole, end)
		if err := fn(data, hole); err != nil {
			return err
		}
		pos = hole
	}
	return nil
}
