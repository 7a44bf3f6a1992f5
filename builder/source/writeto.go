package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DecodeError is input that does not decompress: truncated or corrupt.
type DecodeError struct {
	Format    Format
	Truncated bool
	Err       error
}

func (e *DecodeError) Error() string {
	noun := "stream"
	if e.Format == Zip {
		noun = "archive"
	}
	if e.Truncated {
		return fmt.Sprintf("%s %s is truncated: the download may be incomplete; download it again", e.Format, noun)
	}
	return fmt.Sprintf("%s %s is corrupt (%v): download it again", e.Format, noun, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// writeError marks a failure to write the output, so it is not mistaken
// for damaged input.
type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

// decodeError classifies an error from a decompressor.
func decodeError(f Format, err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var we writeError
	if errors.As(err, &we) {
		return we.err
	}
	var de *DecodeError
	if errors.As(err, &de) {
		return err
	}
	return &DecodeError{Format: f, Truncated: errors.Is(err, io.ErrUnexpectedEOF), Err: err}
}

// progress serialises calls to Options.Progress.
type progress struct {
	mu          sync.Mutex
	fn          func(done, total int64)
	done, total int64
}

// set reports done bytes consumed so far, for decoders that know the
// position rather than the increments (or report in their own units, such
// as blocks, and stop short of the file size); it never moves backwards.
func (p *progress) set(done int64) {
	if p == nil || p.fn == nil {
		return
	}
	p.mu.Lock()
	if done > p.done {
		p.done = done
		p.fn(p.done, p.total)
	}
	p.mu.Unlock()
}

func (p *progress) add(n int64) {
	if p == nil || p.fn == nil || n == 0 {
		return
	}
	p.mu.Lock()
	p.done += n
	p.fn(p.done, p.total)
	p.mu.Unlock()
}

// inputReader hashes and counts the input as it is consumed.
type inputReader struct {
	r        io.Reader
	sha      hash.Hash
	n        int64
	progress *progress           // nil while another party reports progress
	hashed   func(sha256 string) // Options.InputHashed, called at the first io.EOF
}

func (in *inputReader) Read(p []byte) (int, error) {
	n, err := in.r.Read(p)
	in.sha.Write(p[:n])
	in.n += int64(n)
	in.progress.add(int64(n))
	if err == io.EOF && in.hashed != nil {
		in.hashed(in.sum())
		in.hashed = nil
	}
	return n, err
}

func (in *inputReader) sum() string { return hex.EncodeToString(in.sha.Sum(nil)) }

// WriteTo decompresses the image into dst, sparsely, and verifies the input
// checksum when one is known. dst is truncated first and must be a regular
// file. On any error, including a checksum mismatch found only at the end,
// dst holds garbage: the caller must delete it. A Source can be written once.
func (s *Source) WriteTo(ctx context.Context, dst *os.File) (Stats, error) {
	if s.used {
		return Stats{}, errors.New("base image was already read: open it again")
	}
	if err := dst.Truncate(0); err != nil {
		return Stats{}, fmt.Errorf("truncate %q: %w", dst.Name(), err)
	}
	if _, err := dst.Seek(0, io.SeekStart); err != nil {
		return Stats{}, fmt.Errorf("seek %q: %w", dst.Name(), err)
	}
	stopWriteback := startWriteback(dst)
	defer stopWriteback()
	return s.write(ctx, dst, dst)
}

// Stream is WriteTo into a Sink that need not be a file: the image's data
// runs arrive front to back (increasing offsets, all-zero 4 KiB pages left
// out), nothing is read back from dst, and Truncate sets the size last.
// xz is then decoded by xz-utils through a pipe, or by the sequential Go
// decoder, never in parallel blocks.
func (s *Source) Stream(ctx context.Context, dst Sink) (Stats, error) {
	if s.used {
		return Stats{}, errors.New("base image was already read: open it again")
	}
	s.stream, s.plan = true, nil // a plan made for WriteTo may not stream
	return s.write(ctx, dst, nil)
}

// write decodes into dst; file is dst when it is a file (WriteTo).
func (s *Source) write(ctx context.Context, dst Sink, file *os.File) (Stats, error) {
	st := Stats{Format: s.Format, ChecksumOrigin: s.ChecksumOrigin}
	s.used = true
	prog := &progress{fn: s.opts.Progress, total: s.Size}
	in := &inputReader{r: s.input, sha: sha256.New(), progress: prog, hashed: s.opts.InputHashed}
	var image hash.Hash
	if s.opts.HashImage {
		image = sha256.New()
	}

	var err error
	switch s.Format {
	case Raw:
		st.Decoder = "raw"
		st.ImageSize, err = copySparse(ctx, dst, in, image)
		err = decodeError(Raw, err)
	case Gzip:
		st.Decoder = "gzip"
		st.ImageSize, err = s.writeGzip(ctx, dst, in, image)
	case Zstd:
		st.Decoder = "zstd"
		st.ImageSize, err = s.writeZstd(ctx, dst, in, image)
	case XZ:
		st.Decoder, st.ImageSize, err = s.writeXZ(ctx, dst, file, in, image, prog)
	case Zip:
		st.Decoder = "zip"
		st.ImageSize, err = s.writeZip(ctx, dst, in, image)
	default:
		err = fmt.Errorf("unknown format %v", s.Format)
	}
	if ctx.Err() != nil {
		return st, ctx.Err()
	}
	// Hash whatever the decompressor left unread so the digest covers the
	// whole input. After a decode error that is worth it only with a
	// checksum to compare: a mismatch explains a truncated or corrupt
	// archive better than the decoder can.
	if err == nil || s.Checksum != "" {
		if _, derr := io.Copy(io.Discard, contextReader{ctx, in}); derr != nil && err == nil {
			err = fmt.Errorf("read base image: %w", derr)
		}
	}
	st.InputSize = in.n
	st.InputSHA256 = in.sum()
	if s.Checksum != "" {
		if st.InputSHA256 != s.Checksum {
			return st, &ChecksumError{Name: s.Name, Expected: s.Checksum, Origin: s.ChecksumOrigin, Got: st.InputSHA256}
		}
		st.Verified = true
	}
	if err != nil {
		return st, err
	}
	prog.set(in.n)
	if image != nil {
		st.ImageSHA256 = hex.EncodeToString(image.Sum(nil))
	}
	return st, nil
}

// writebackInterval is how often the decoded image is handed to the disk
// while decoding goes on.
const writebackInterval = 250 * time.Millisecond

// startWriteback starts writing dst's dirty pages to disk every
// writebackInterval until stopped, without waiting for them. The kernel
// would otherwise keep an image smaller than its dirty-memory threshold in
// memory, and the caller's final fsync would write all of it at once, after
// decoding, instead of during it.
func startWriteback(dst *os.File) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	fd := int(dst.Fd())
	go func() {
		defer close(stopped)
		tick := time.NewTicker(writebackInterval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				// Best effort: a file system without it just syncs later.
				_ = unix.SyncFileRange(fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// verifyEarly checks the digest of the input read so far, before anything
// is decoded; for zip, which has read all of it by then.
func (s *Source) verifyEarly(in *inputReader) error {
	if s.Checksum == "" {
		return nil
	}
	got := hex.EncodeToString(in.sha.Sum(nil))
	if got != s.Checksum {
		return &ChecksumError{Name: s.Name, Expected: s.Checksum, Origin: s.ChecksumOrigin, Got: got}
	}
	return nil
}
