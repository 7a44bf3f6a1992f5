package source

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/nixpi/nixpi/builder/source/xzpar"
	"github.com/nixpi/nixpi/firstboot/system"
)

// xzUtilsLocal decodes a local file with xz-utils, which writes dst itself
// (xz makes a regular-file stdout sparse on its own), so no byte of the
// image crosses this process. The input is hashed here meanwhile, with
// positional reads, in parallel with the decoding.
//
// When the file's index shows blocks that repeat a block of zeros
// (xzpar.Repeats: the free space of a disk image), those are not decoded:
// the blocks in between are decoded run by run, one xz each, and the
// repeats become holes. Otherwise the file is xz's stdin as it is.
func (s *Source) xzUtilsLocal(ctx context.Context, plan *xzPlan, dst *os.File, in *inputReader, prog *progress) (string, int64, error) {
	finish := s.hashInput(ctx, in)
	xzPath, idx := plan.xzPath, plan.index
	var repeats map[int]int
	err := errors.New("no index") // a damaged index is xz's to report, with the rest of the file
	if idx != nil {
		repeats, err = xzpar.Repeats(s.file, idx)
	}
	if err != nil || len(repeats) == 0 {
		n, err := s.xzUtilsWhole(ctx, xzPath, dst, prog)
		return "xz-utils", n, finish(err)
	}
	skipped, err := s.xzUtilsRuns(ctx, xzPath, dst, idx, repeats, prog)
	if err != nil {
		return "xz-utils", 0, finish(err)
	}
	decoder := fmt.Sprintf("xz-utils (%d of %d blocks repeat a block of zeros: not decoded)", skipped, len(idx.Blocks))
	return decoder, idx.ImageSize, finish(nil)
}

// xzUtilsWhole runs one xz with the input file as its stdin and dst as its
// stdout. Progress is how far xz has read: the position of the file
// description it shares with s.file.
func (s *Source) xzUtilsWhole(ctx context.Context, xzPath string, dst *os.File, prog *progress) (int64, error) {
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("read base image %q: %w", s.Name, err)
	}
	ran := make(chan error, 1)
	go func() { ran <- s.runXZ(ctx, xzPath, s.file, dst, "") }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-ran:
			if err != nil {
				return 0, err
			}
			st, err := dst.Stat()
			if err != nil {
				return 0, writeError{err}
			}
			return st.Size(), nil
		case <-tick.C:
			if pos, err := s.file.Seek(0, io.SeekCurrent); err == nil {
				prog.set(pos)
			}
		}
	}
}

// xzUtilsRuns decodes the blocks of idx into dst front to back, leaving
// out each block in repeats whose first copy decoded to zeros: dst is
// extended over it, a hole. It returns how many blocks it left out.
func (s *Source) xzUtilsRuns(ctx context.Context, xzPath string, dst *os.File, idx *xzpar.Index, repeats map[int]int, prog *progress) (int, error) {
	if err := dst.Truncate(0); err != nil {
		return 0, writeError{err}
	}
	zeros := zeroRepeats{path: dst.Name(), index: idx, repeats: repeats}
	var run []xzpar.Block
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		err := s.xzUtilsRun(ctx, xzPath, dst.Name(), run, prog)
		run = run[:0]
		return err
	}
	skipped := 0
	for i, b := range idx.Blocks {
		_, repeat := repeats[i]
		if last := len(run) - 1; repeat || last >= 0 && (b.StreamFlags != run[last].StreamFlags || b.Offset != run[last].Offset+run[last].PaddedSize()) {
			// A new stream, or a repeat, whose first copy is decoded
			// before this: in the pending run or in one before.
			if err := flush(); err != nil {
				return 0, err
			}
		}
		if skip, err := zeros.skip(i); err != nil {
			return 0, err
		} else if !skip {
			run = append(run, b)
			continue
		}
		if err := dst.Truncate(b.ImageOffset + b.ImageSize); err != nil {
			return 0, writeError{err}
		}
		skipped++
		prog.set(b.Offset + b.PaddedSize())
	}
	if err := flush(); err != nil {
		return 0, err
	}
	if st, err := dst.Stat(); err != nil {
		return 0, writeError{err}
	} else if st.Size() != idx.ImageSize {
		return 0, &DecodeError{Format: XZ, Err: fmt.Errorf("decoded %d bytes, the xz index says %d", st.Size(), idx.ImageSize)}
	}
	return skipped, nil
}

// xzUtilsRun decodes consecutive blocks of one stream with one xz, whose
// stdout is the output file opened anew and positioned at the run's start,
// which is the file's end: xz then writes it sparsely.
func (s *Source) xzUtilsRun(ctx context.Context, xzPath, dstPath string, run []xzpar.Block, prog *progress) error {
	stream, err := xzpar.StreamOf(s.file, run)
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dstPath, os.O_WRONLY, 0)
	if err != nil {
		return writeError{err}
	}
	defer out.Close()
	start := run[0].ImageOffset
	if _, err := out.Seek(start, io.SeekStart); err != nil {
		return writeError{err}
	}
	stdin := &positionReader{r: stream, pos: run[0].Offset - headerSize, prog: prog}
	if err := s.runXZ(ctx, xzPath, stdin, out, fmt.Sprintf("blocks %d-%d", run[0].Number, run[len(run)-1].Number)); err != nil {
		return err
	}
	last := run[len(run)-1]
	if st, err := out.Stat(); err != nil {
		return writeError{err}
	} else if end := last.ImageOffset + last.ImageSize; st.Size() != end {
		return &DecodeError{Format: XZ, Err: fmt.Errorf("blocks %d-%d decoded to end at byte %d, the xz index says %d", run[0].Number, last.Number, st.Size(), end)}
	}
	return nil
}

// headerSize is the xz stream header that xzpar.StreamOf puts before the
// blocks.
const headerSize = 12

// positionReader reports, as progress, where in the input file the bytes
// it passes on come from.
type positionReader struct {
	r    io.Reader
	pos  int64
	prog *progress
}

func (p *positionReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.pos += int64(n)
	p.prog.set(p.pos)
	return n, err
}

// decodedToZeros says whether block b's part of the output file is all
// zeros, reading only where the file has data.
func decodedToZeros(path string, b xzpar.Block) (bool, error) {
	f, err := os.Open(path) // own descriptor: its position moves
	if err != nil {
		return false, writeError{err}
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	errNotZeros := errors.New("not zeros")
	err = WalkData(f, b.ImageOffset, b.ImageOffset+b.ImageSize, func(data, hole int64) error {
		for off := data; off < hole; {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), hole-off)], off)
			if err != nil {
				return writeError{err}
			}
			if !isZeros(buf[:n]) {
				return errNotZeros
			}
			off += int64(n)
		}
		return nil
	})
	if err == errNotZeros {
		return false, nil
	}
	return err == nil, err
}

// xzUtilsPiped feeds the input (hashed on the way) to xz through a pipe:
// for a URL. Without image hashing xz writes a file dst itself; with it,
// or into another Sink, the image passes through here.
func (s *Source) xzUtilsPiped(ctx context.Context, xzPath string, dst Sink, in *inputReader, image hash.Hash) (int64, error) {
	if dst, ok := dst.(*os.File); ok && image == nil {
		if err := s.runXZ(ctx, xzPath, in, dst, ""); err != nil {
			return 0, err
		}
		st, err := dst.Stat()
		if err != nil {
			return 0, writeError{err}
		}
		return st.Size(), nil
	}
	pr, pw := io.Pipe()
	ran := make(chan error, 1)
	go func() {
		err := s.runXZ(ctx, xzPath, in, pw, "")
		pw.Close()
		ran <- err
	}()
	n, copyErr := copySparse(ctx, dst, pr, image)
	if copyErr != nil {
		io.Copy(io.Discard, pr) // let xz finish before reporting
	}
	if err := <-ran; err != nil {
		return 0, err
	}
	if copyErr != nil {
		return 0, decodeError(XZ, copyErr)
	}
	return n, nil
}

// runXZ runs xz-utils, decoding stdin to stdout (an *os.File is xz's own:
// it then writes the file itself, sparsely), through the logged runner. xz
// runs in the C locale: its messages say what went wrong. note, when set,
// follows the logged command.
func (s *Source) runXZ(ctx context.Context, xzPath string, stdin io.Reader, stdout io.Writer, note string) error {
	log := s.opts.Log
	if log != nil && note != "" {
		log = func(line string) { s.opts.Log(line + "  # " + note) }
	}
	runner := system.ExecRunner{Log: log, Env: []string{"LC_ALL=C"}}
	err := runner.Pipe(ctx, stdin, stdout, xzPath, "--decompress", "--stdout", "--threads=0")
	var ce *system.CommandError
	var exit *exec.ExitError
	if !errors.As(err, &ce) || !errors.As(err, &exit) {
		return err
	}
	switch msg := ce.Stderr; {
	case strings.Contains(msg, "Unexpected end of input"):
		return &DecodeError{Format: XZ, Truncated: true, Err: err}
	case strings.Contains(msg, "Compressed data is corrupt"),
		strings.Contains(msg, "File format not recognized"),
		strings.Contains(msg, "Unsupported options"),
		strings.Contains(msg, "integrity check"),
		strings.Contains(msg, "data is corrupt"):
		return &DecodeError{Format: XZ, Err: err}
	}
	return err
}
