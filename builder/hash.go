package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"github.com/nixpi/nixpi/builder/source"
)

// imageHasher computes the sha256 of the image being built, in order. It
// has a descriptor of its own: seeking for holes on the output's
// descriptor would move the write position that a decoder (xz) shares.
type imageHasher struct {
	f     *os.File
	h     hash.Hash
	off   int64 // bytes hashed so far
	buf   []byte
	zeros []byte
}

func newImageHasher(path string) (*imageHasher, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("hash %q: %w", path, err)
	}
	return &imageHasher{f: f, h: sha256.New(), buf: make([]byte, 1<<20), zeros: make([]byte, 1<<20)}, nil
}

func (x *imageHasher) Close() error { return x.f.Close() }

// Sum is the sha256 of what was hashed, in hex.
func (x *imageHasher) Sum() string { return hex.EncodeToString(x.h.Sum(nil)) }

// hashTo hashes up to byte end, taking the holes' zeros from memory:
// reading a hole makes the kernel allocate and clear a page for every 4 KiB
// of it, which costs more than hashing the zeros.
func (x *imageHasher) hashTo(end int64) error {
	err := source.WalkData(x.f, x.off, end, func(data, hole int64) error {
		x.hashZeros(data)
		n, err := io.CopyBuffer(x.h, io.NewSectionReader(x.f, data, hole-data), x.buf)
		x.off += n
		return err
	})
	if err != nil {
		return err
	}
	x.hashZeros(end)
	return nil
}

// hashZeros hashes zeros up to byte end.
func (x *imageHasher) hashZeros(end int64) {
	for x.off < end {
		n := min(int64(len(x.zeros)), end-x.off)
		x.h.Write(x.zeros[:n])
		x.off += n
	}
}

// followInterval is how often follow looks at how far the decoder got.
const followInterval = 5 * time.Millisecond

// follow hashes the image while a decoder writes it front to back, so that
// the hashing overlaps the decoding; once decoded is closed it hashes the
// rest and returns. Everything below the file's size is final meanwhile:
// a front-to-back writer only extends the file by writing past its end.
func (x *imageHasher) follow(ctx context.Context, decoded <-chan struct{}) error {
	const step = 4 << 20 // hash in steps of at least this much: fewer wakeups
	for {
		finished := false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-decoded:
			finished = true
		default:
		}
		st, err := x.f.Stat()
		if err != nil {
			return fmt.Errorf("hash %q: %w", x.f.Name(), err)
		}
		if finished || st.Size()-x.off >= step {
			if err := x.hashTo(st.Size()); err != nil {
				return fmt.Errorf("hash %q: %w", x.f.Name(), err)
			}
		}
		if finished {
			return nil
		}
		time.Sleep(followInterval)
	}
}
