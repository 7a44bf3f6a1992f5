package source

import (
	"bufio"
	"context"
	"fmt"
	"hash"
	"io"
	"os"
	"os/exec"

	"github.com/nixpi/nixpi/builder/source/xzpar"
	"github.com/ulikunitz/xz"
)

// xzDecoder is one of the ways WriteTo decodes xz, fastest first.
type xzDecoder int

const (
	// xz-utils (`xz -dc -T0`), about 3x faster than Go per core, reading
	// the local file and writing the output itself, sparsely (xzutils.go).
	xzUtilsFile xzDecoder = iota
	// xz-utils fed through a pipe: for a URL, or when HashImage asks for
	// the image to pass through here.
	xzUtilsPipe
	// The index-driven parallel Go decoder, for a local multi-block file.
	xzParallel
	// The sequential Go decoder, which works on any stream.
	xzSequential
)

// xzPlan is the xz decoder WriteTo uses, chosen once (xzPlan) and read by
// both WriteTo and WritesInOrder.
type xzPlan struct {
	decoder xzDecoder
	xzPath  string       // xz-utils, for xzUtilsFile and xzUtilsPipe
	index   *xzpar.Index // for xzParallel and xzUtilsFile; nil if damaged
}

func (s *Source) xzPlan() *xzPlan {
	if s.plan != nil {
		return s.plan
	}
	s.plan = &xzPlan{decoder: xzSequential}
	xzPath := s.opts.XZPath
	if found, err := exec.LookPath("xz"); xzPath == "" && err == nil {
		xzPath = found
	}
	if s.opts.DisableExternalXZ {
		xzPath = ""
	}
	switch {
	case xzPath != "" && s.file != nil && !s.opts.HashImage && !s.stream:
		s.plan.decoder, s.plan.xzPath = xzUtilsFile, xzPath
		if idx, err := xzpar.ReadIndex(s.file, s.Size); err == nil {
			s.plan.index = idx
		}
	case xzPath != "":
		s.plan.decoder, s.plan.xzPath = xzUtilsPipe, xzPath
	case s.file != nil && s.opts.Workers > 1 && !s.stream:
		// A damaged tail leaves no usable index: the sequential decoder
		// then reports what is wrong.
		if idx, err := xzpar.ReadIndex(s.file, s.Size); err == nil && len(idx.Blocks) > 1 {
			s.plan.decoder, s.plan.index = xzParallel, idx
		}
	}
	return s.plan
}

// writeXZ decodes with the planned decoder. file is dst when it is a
// file; the decoders that need one are not planned for a Stream.
func (s *Source) writeXZ(ctx context.Context, dst Sink, file *os.File, in *inputReader, image hash.Hash, prog *progress) (string, int64, error) {
	plan := s.xzPlan()
	switch plan.decoder {
	case xzUtilsFile:
		return s.xzUtilsLocal(ctx, plan, file, in, prog)
	case xzUtilsPipe:
		n, err := s.xzUtilsPiped(ctx, plan.xzPath, dst, in, image)
		return "xz-utils", n, err
	case xzParallel:
		idx := plan.index
		n, skipped, err := s.decodeParallel(ctx, idx, file, in, image, prog)
		decoder := fmt.Sprintf("parallel xz (%d blocks, %d workers)", len(idx.Blocks), s.opts.Workers)
		if skipped > 0 {
			decoder = fmt.Sprintf("parallel xz (%d blocks, %d of them repeat a block of zeros: not decoded; %d workers)", len(idx.Blocks), skipped, s.opts.Workers)
		}
		return decoder, n, err
	}
	xr, err := xz.NewReader(bufio.NewReaderSize(in, 256<<10))
	if err != nil {
		return "sequential xz", 0, decodeError(XZ, err)
	}
	n, err := copySparse(ctx, dst, xr, image)
	return "sequential xz", n, decodeError(XZ, err)
}

// hashInput hashes the local input file on a goroutine of its own, with
// positional reads, while a decoder reads the file itself; the decoder's
// reading is the progress, not the hashing. wait(err) returns err, having
// stopped the hashing, or else once the input is hashed, the hashing's
// error. After a stop, WriteTo hashes the rest.
func (s *Source) hashInput(ctx context.Context, in *inputReader) (wait func(err error) error) {
	in.r = io.NewSectionReader(s.file, 0, s.Size)
	in.progress = nil
	ctx, stop := context.WithCancel(ctx)
	hashed := make(chan error, 1)
	go func() {
		buf := make([]byte, 1<<20) // io.Discard's own ReadFrom would read 8 KiB at a time
		_, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, contextReader{ctx, in}, buf)
		hashed <- err
	}()
	return func(err error) error {
		if err != nil {
			stop()
			<-hashed
			return err
		}
		defer stop()
		if err := <-hashed; err != nil {
			return fmt.Errorf("read base image %q: %w", s.Name, err)
		}
		return nil
	}
}

// decodeParallel decodes the blocks of a local file on Workers goroutines,
// each writing its block at its own offset. Blocks that repeat a block of
// zeros (xzpar.Repeats) are left for last and decoded only if their first
// copy turned out not to be zeros; otherwise they stay holes. The input
// hash is computed meanwhile by one sequential read of the file (from the
// page cache). It returns the image size and how many blocks it left out.
func (s *Source) decodeParallel(ctx context.Context, idx *xzpar.Index, dst *os.File, in *inputReader, image hash.Hash, prog *progress) (int64, int, error) {
	hashed := s.hashInput(ctx, in) // progress follows the decoded blocks instead
	write := func(off int64, p []byte) error { return writeSparse(dst, off, p) }
	done := func(b xzpar.Block) { prog.add(b.PaddedSize()) }
	repeats, err := xzpar.Repeats(s.file, idx)
	var skipped int
	if err == nil {
		skipped, err = s.decodeSkipping(ctx, idx, repeats, dst, write, done)
	}
	if err = hashed(err); err != nil {
		return 0, 0, decodeError(XZ, err)
	}
	if err := dst.Truncate(idx.ImageSize); err != nil {
		return 0, 0, fmt.Errorf("set size of %q: %w", dst.Name(), err)
	}
	if image != nil {
		if _, err := io.Copy(image, io.NewSectionReader(dst, 0, idx.ImageSize)); err != nil {
			return 0, 0, fmt.Errorf("hash %q: %w", dst.Name(), err)
		}
	}
	return idx.ImageSize, skipped, nil
}

// decodeSkipping runs xzpar.Decode on every block but the repeats, then on
// the repeats zeroRepeats cannot skip.
func (s *Source) decodeSkipping(ctx context.Context, idx *xzpar.Index, repeats map[int]int, dst *os.File, write xzpar.WriteFunc, done func(xzpar.Block)) (int, error) {
	firsts := &xzpar.Index{Streams: idx.Streams, ImageSize: idx.ImageSize}
	rest := &xzpar.Index{Streams: idx.Streams, ImageSize: idx.ImageSize}
	for i, b := range idx.Blocks {
		if _, repeat := repeats[i]; !repeat {
			firsts.Blocks = append(firsts.Blocks, b)
		}
	}
	if err := xzpar.Decode(ctx, s.file, firsts, s.opts.Workers, write, done); err != nil {
		return 0, err
	}
	zeros := zeroRepeats{path: dst.Name(), index: idx, repeats: repeats}
	for i, b := range idx.Blocks {
		if _, repeat := repeats[i]; !repeat {
			continue
		}
		if skip, err := zeros.skip(i); err != nil {
			return 0, err
		} else if skip {
			done(b)
		} else {
			rest.Blocks = append(rest.Blocks, b)
		}
	}
	if err := xzpar.Decode(ctx, s.file, rest, s.opts.Workers, write, done); err != nil {
		return 0, err
	}
	return len(repeats) - len(rest.Blocks), nil
}

// zeroRepeats says which blocks need not be decoded: those that repeat
// (xzpar.Repeats) a block that decoded to zeros, which the output file
// holds already as a hole.
type zeroRepeats struct {
	path    string // the output file
	index   *xzpar.Index
	repeats map[int]int
	zeros   map[int]bool // first copies, by whether they decoded to zeros
}

// skip says whether block i need not be decoded. The block it repeats, if
// any, must be decoded already.
func (z *zeroRepeats) skip(i int) (bool, error) {
	first, repeat := z.repeats[i]
	if !repeat {
		return false, nil
	}
	zero, known := z.zeros[first]
	if !known {
		var err error
		if zero, err = decodedToZeros(z.path, z.index.Blocks[first]); err != nil {
			return false, err
		}
		if z.zeros == nil {
			z.zeros = map[int]bool{}
		}
		z.zeros[first] = zero
	}
	return zero, nil // not zero: a check value that collided
}
