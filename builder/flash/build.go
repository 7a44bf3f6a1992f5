package flash

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/builder/fatfs"
	"github.com/nixpi/nixpi/builder/source"
	"github.com/nixpi/nixpi/firstboot/config"
)

// Build builds a card from build.Base and build.Config, as builder.Build
// does, straight onto opts.Device, in one pass over the base: the card
// equals what `nixpi build` then `nixpi flash` writes (builder.CardFinish
// finishes both). The disk is checked and claimed (confirmation, exclusive
// open) before the base is decoded, so a refusal costs no build and
// changes nothing. Only the image's first bytes, up to the end of its boot
// partition (the partition table and the FAT the build edits), are kept on
// the workstation, in a sparse temporary file in opts.TempDir; the rest
// goes onto the disk as it is decoded. An error after the first write
// wraps ErrCardIncomplete. build.Out, build.Force and opts.Image are not
// used; the builder.Result's SHA256 stays empty (the image is never whole
// in one place to hash).
func Build(ctx context.Context, build builder.Options, opts Options) (*builder.Result, *Result, error) {
	logf := opts.logf
	disk, err := probeFlashDisk(opts)
	if err != nil {
		return nil, nil, err
	}
	card, err := builder.NewCardFinish(build)
	if err != nil {
		return nil, nil, err
	}
	if build.Log != nil {
		build.Log("copying base image " + build.Base)
	}
	src, err := card.OpenBase(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	defer src.Close()
	if build.SHA256 != "" {
		// Asked for, so compared before the disk is written (a local
		// base; a URL is read once, and compared as it is).
		if _, err := src.VerifyFirst(ctx); err != nil {
			return nil, nil, err
		}
	}
	dev, err := disk.claim(opts, logf)
	if err != nil {
		return nil, nil, err
	}
	defer dev.Close()
	img, err := newStreamedImage(disk, dev, opts.TempDir)
	if err != nil {
		return nil, nil, err
	}
	defer img.close()
	built, res, err := img.build(ctx, card, opts, src, logf)
	if err != nil {
		if img.started {
			return nil, nil, flashFailed(ctx, err)
		}
		return nil, nil, err
	}
	built.Private = card.Private()
	return built, res, nil
}

// probeFlashDisk is the disk at opts.Device, refused when the system uses
// it (opts.Unmount leaves its mounts for after the confirmation) or when
// it is not removable without opts.AllowNonRemovable. With Unmount the
// disk's own mounts (never /) are left for after the confirmation.
func probeFlashDisk(opts Options) (*Disk, error) {
	disk, err := probeDisk(opts.rootDir(), opts.Device)
	if err != nil {
		return nil, err
	}
	if err := disk.checkUnused(opts.Unmount); err != nil {
		return nil, err
	}
	if err := disk.checkRemovable(opts.AllowNonRemovable); err != nil {
		return nil, err
	}
	return disk, nil
}

// streamedImage is the card image of Build as the base is decoded
// into it (a source.Sink) and then read to identify, edit and map it.
// Bytes below headEnd are kept in head, a sparse temporary file; the rest
// go onto the disk in large aligned direct writes and are read back from
// it. What the decoder left out reads as zeros.
type streamedImage struct {
	disk *Disk
	dev  *os.File // exclusive, O_DIRECT
	rd   *os.File // the disk, through the page cache, for reading
	head *os.File
	// headEnd is where the disk takes over: the boot partition's end,
	// rounded up to headAlign; 0 until the partition table has arrived.
	headEnd int64
	size    int64 // the image's, once the decoder set it
	started bool  // the disk was written to

	buf     []byte // aligned; pending bytes [bufOff, bufOff+bufLen)
	bufOff  int64
	bufLen  int
	written []builder.Range // the data on the disk at and after headEnd, in order

	// While the base is decoded a writer goroutine writes what flush
	// hands it, so the decoding goes on meanwhile; it owns chunks and
	// total until stopWriter.
	free    chan []byte // the other aligned buffer, once written
	jobs    chan streamJob
	stopped chan struct{} // closed when the writer is gone
	failed  atomic.Bool   // the writer's error is set
	werr    error         // its first error; read after stopped
	buffers [][]byte

	chunks []chunk // every direct write, for the read-back
	total  int64   // bytes written
}

// streamJob is bytes of the base for the writer to put onto the disk.
type streamJob struct {
	buf []byte
	off int64
}

// headAlign rounds the head's end up so that the disk's part starts on a
// boundary every disk's blocks divide.
const headAlign = 1 << 20

func newStreamedImage(disk *Disk, dev *os.File, tempDir string) (*streamedImage, error) {
	head, err := os.CreateTemp(tempDir, ".nixpi-flash-boot-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("temporary file for the boot partition: %w (set TMPDIR to a directory with room)", err)
	}
	os.Remove(head.Name()) // nothing needs its name; it goes when closed, however this ends
	rd, err := os.Open(disk.Path)
	if err != nil {
		head.Close()
		return nil, fmt.Errorf("open %q: %w", disk.Path, err)
	}
	s := &streamedImage{disk: disk, dev: dev, rd: rd, head: head, free: make(chan []byte, 1), jobs: make(chan streamJob), stopped: make(chan struct{})}
	for range 2 {
		buf, err := alignedBuffer(flashChunk)
		if err != nil {
			s.close()
			return nil, err
		}
		s.buffers = append(s.buffers, buf)
	}
	s.buf = s.buffers[0]
	s.free <- s.buffers[1]
	go s.writer()
	return s, nil
}

// writer writes the jobs in order until stopWriter; after an error it
// only hands the buffers back.
func (s *streamedImage) writer() {
	defer close(s.stopped)
	for j := range s.jobs {
		if s.werr == nil {
			if s.werr = s.writeChunk(j.buf, j.off, true); s.werr != nil {
				s.failed.Store(true)
			}
		}
		s.free <- j.buf[:cap(j.buf)]
	}
}

// stopWriter waits for the writer to finish and says its error. Called
// more than once it says the same.
func (s *streamedImage) stopWriter() error {
	select {
	case <-s.stopped:
	default:
		close(s.jobs)
		<-s.stopped
	}
	return s.werr
}

func (s *streamedImage) close() {
	s.stopWriter()
	s.head.Close()
	s.rd.Close()
	for _, b := range s.buffers {
		unix.Munmap(b)
	}
}

// Name is the disk's, for the decoder's messages.
func (s *streamedImage) Name() string { return s.disk.Path }

// WriteAt takes the decoder's data runs, front to back.
func (s *streamedImage) WriteAt(p []byte, off int64) (int, error) {
	n := len(p)
	if s.headEnd == 0 || off < s.headEnd {
		k := len(p)
		if s.headEnd > 0 {
			k = int(min(int64(k), s.headEnd-off))
		}
		if _, err := s.head.WriteAt(p[:k], off); err != nil {
			return 0, fmt.Errorf("write the boot partition's temporary file: %w", err)
		}
		if s.headEnd == 0 {
			if err := s.findHeadEnd(); err != nil {
				return 0, err
			}
			if s.headEnd > 0 && off+int64(k) > s.headEnd {
				k = int(max(0, s.headEnd-off)) // the rest is the disk's
			}
		}
		p, off = p[k:], off+int64(k)
	}
	for len(p) > 0 {
		if s.bufLen > 0 && (off != s.bufOff+int64(s.bufLen) || s.bufLen == len(s.buf)) {
			if err := s.flush(); err != nil {
				return 0, err
			}
		}
		if s.bufLen == 0 {
			s.bufOff = off
		}
		k := copy(s.buf[s.bufLen:], p)
		s.bufLen += k
		p, off = p[k:], off+int64(k)
	}
	return n, nil
}

// findHeadEnd reads the partition table once the first sector is in
// head: the disk takes over after the boot partition, and a disk smaller
// than the image is refused now, before anything is written to it.
func (s *streamedImage) findHeadEnd() error {
	st, err := s.head.Stat()
	if err != nil || st.Size() < 512 {
		return err
	}
	table, err := baseimage.ReadTable(s.head)
	if err != nil {
		return fmt.Errorf("base image: %w", err)
	}
	boot, err := baseimage.BootPartition(s.head)
	if err != nil {
		return err
	}
	for _, p := range table.Partitions {
		if p.End() > s.disk.Size {
			return fmt.Errorf("refusing %s: it is smaller than the image (%d bytes, the image's partition %d ends at byte %d): use a card of at least %s; %s was not changed", s.disk, s.disk.Size, p.Index, p.End(), config.Size(p.End()).Approx(), s.disk.Path)
		}
	}
	s.headEnd = (boot.End() + headAlign - 1) / headAlign * headAlign
	return nil
}

// flush hands the pending bytes to the writer, which puts them onto the
// disk, and takes the other buffer once it is free.
func (s *streamedImage) flush() error {
	if s.failed.Load() {
		return s.stopWriter()
	}
	if s.bufLen == 0 {
		return nil
	}
	off, n := s.bufOff, int64(s.bufLen)
	s.bufLen = 0
	if n%s.disk.LogicalBlock != 0 || off%s.disk.LogicalBlock != 0 {
		return fmt.Errorf("the image's bytes %d-%d do not fall on the %d-byte blocks of %s: is the base a disk image?", off, off+n, s.disk.LogicalBlock, s.disk.Path)
	}
	if err := s.start(); err != nil {
		return err
	}
	s.jobs <- streamJob{s.buf[:n], off}
	s.buf = <-s.free
	if last := len(s.written) - 1; last >= 0 && s.written[last].End == off {
		s.written[last].End = off + n
	} else {
		s.written = append(s.written, builder.Range{Start: off, End: off + n})
	}
	return nil
}

// start comes before every write to the disk, and checks, before the
// first, the boot partition in head, whole by then (the decoder writes in
// order, and the disk takes only what comes after head): a base that is
// not one a card is made from, one that carries nixpi already included,
// is refused with the disk unchanged, as builder.Build refuses it.
func (s *streamedImage) start() error {
	if s.started {
		return nil
	}
	base, err := baseimage.InspectBoot(s.head)
	if err != nil {
		return fmt.Errorf("%w; %s was not changed", err, s.disk.Path)
	}
	fsys, err := fatfs.OpenReadOnly(s.head, base.Boot.Start, base.Boot.Size)
	if err != nil {
		return fmt.Errorf("base image: boot partition: %w; %s was not changed", err, s.disk.Path)
	}
	if err := builder.RefuseNixpiCard(fsys); err != nil {
		return fmt.Errorf("%w; %s was not changed", err, s.disk.Path)
	}
	s.started = true
	return nil
}

// writeChunk writes b (aligned) at off onto the disk and keeps its hash,
// and with streamed (the bytes are not kept) its blocks'.
func (s *streamedImage) writeChunk(b []byte, off int64, streamed bool) error {
	if _, err := s.dev.WriteAt(b, off); err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("write %q at byte %d: %w", s.disk.Path, off, err)
	}
	c := chunk{off: off, n: int64(len(b)), sum: sha256.Sum256(b)}
	if streamed {
		c.blocks = blockSums(b)
	}
	s.chunks = append(s.chunks, c)
	s.total += int64(len(b))
	return nil
}

// Truncate records the image's size: the decoder is done.
func (s *streamedImage) Truncate(size int64) error {
	if s.headEnd == 0 {
		return fmt.Errorf("base image: %d bytes, no partition table in them", size)
	}
	if size > s.disk.Size {
		return fmt.Errorf("%s is smaller than the image (%d bytes, the image %d)", s.disk, s.disk.Size, size)
	}
	s.size = size
	return nil
}

// errNotKept is what ReadAt of what was only sent to the disk says when
// the bytes must come from the image itself (the read-back's comparison).
var errNotKept = errors.New("not kept: the bytes went onto the disk only")

// view reads the image: head, the disk's written ranges, zeros between.
// It has no Name: debugfs must not be handed the disk for a file.
type view struct {
	s *streamedImage
	// expected: refuse to read the disk (errNotKept), for verification.
	expected bool
}

func (v view) ReadAt(p []byte, off int64) (int, error) {
	s := v.s
	if off >= s.size {
		return 0, io.EOF
	}
	want := len(p)
	if over := off + int64(len(p)) - s.size; over > 0 {
		p = p[:int64(len(p))-over]
	}
	done := 0
	for len(p) > 0 {
		var k int
		switch {
		case off < s.headEnd:
			k = int(min(int64(len(p)), s.headEnd-off))
			n, err := s.head.ReadAt(p[:k], off)
			if err != nil && err != io.EOF {
				return done, err
			}
			clear(p[n:k]) // the head's trailing hole
		default:
			i := sort.Search(len(s.written), func(i int) bool { return s.written[i].End > off })
			switch {
			case i == len(s.written):
				k = len(p)
				clear(p)
			case off < s.written[i].Start:
				k = int(min(int64(len(p)), s.written[i].Start-off))
				clear(p[:k])
			default:
				if v.expected {
					return done, errNotKept
				}
				k = int(min(int64(len(p)), s.written[i].End-off))
				if _, err := s.rd.ReadAt(p[:k], off); err != nil {
					return done, fmt.Errorf("read %q at byte %d: %w", s.disk.Path, off, err)
				}
			}
		}
		p, off, done = p[k:], off+int64(k), done+k
	}
	if done < want {
		return done, io.EOF
	}
	return done, nil
}

// mapped is the image's mapped ranges (builder.MappedRanges' rule): the head's
// data scanned for zero blocks, the disk's data (all of it data: the
// decoder left out zero pages) and what the filesystems may read.
func (s *streamedImage) mapped() ([]builder.Range, error) {
	headData, err := builder.DataRanges(s.head, s.headEnd)
	if err != nil {
		return nil, err
	}
	ranges, err := builder.MapImage(view{s: s}, s.disk.Path, s.size, headData, true)
	if err != nil {
		return nil, err
	}
	return builder.MergeRanges(append(ranges, s.written...)), nil
}

// writeRanges writes onto the disk the parts of ranges in [from, to) that
// are not there yet: the head's bytes, and zeros where the disk's data
// leaves gaps.
func (s *streamedImage) writeRanges(ctx context.Context, ranges []builder.Range, from, to int64, progress func(string, int64, int64)) error {
	for _, r := range ranges {
		start, end := max(r.Start, from), min(r.End, to)
		for off := start; off < end; {
			if err := ctx.Err(); err != nil {
				return err
			}
			// Skip what the decoder wrote already.
			i := sort.Search(len(s.written), func(i int) bool { return s.written[i].End > off })
			next := end
			if i < len(s.written) {
				if s.written[i].Start <= off {
					off = s.written[i].End
					continue
				}
				next = min(end, s.written[i].Start)
			}
			n := min(next-off, int64(len(s.buf)))
			if off%s.disk.LogicalBlock != 0 || n%s.disk.LogicalBlock != 0 {
				return fmt.Errorf("refusing %s: its blocks are %d bytes and the image's bytes %d-%d do not fall on them", s.disk, s.disk.LogicalBlock, off, off+n)
			}
			b := s.buf[:n]
			if _, err := (view{s: s}).ReadAt(b, off); err != nil {
				return fmt.Errorf("read the image at byte %d: %w", off, err)
			}
			if err := s.start(); err != nil {
				return err
			}
			if err := s.writeChunk(b, off, false); err != nil {
				return err
			}
			if progress != nil {
				progress("write", s.total, -1)
			}
			off += n
		}
	}
	return nil
}

// build streams src onto the disk, then completes the card as
// builder.Build does (identify, card.Finish) and writes, discards and
// verifies as Write does.
func (s *streamedImage) build(ctx context.Context, card *builder.CardFinish, opts Options, src *source.Source, logf func(string, ...any)) (*builder.Result, *Result, error) {
	logf("building the card onto %s as %s is decoded", s.disk, src.Name)
	start := time.Now()
	copied, err := card.CopyBase(ctx, src, s)
	if err == nil {
		err = s.flush()
	}
	if werr := s.stopWriter(); err == nil {
		err = werr
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return nil, nil, err
	}
	// The blocks a filesystem may read hold the image's bytes before the
	// root is read off the disk, by go-diskfs here or by debugfs there:
	// what is left out of them is free space.
	ranges, err := s.mapped()
	if err != nil {
		return nil, nil, err
	}
	if err := s.writeRanges(ctx, ranges, s.headEnd, s.size, opts.Progress); err != nil {
		return nil, nil, err
	}
	if err := s.dev.Sync(); err != nil {
		return nil, nil, fmt.Errorf("sync %q: %w", s.disk.Path, err)
	}
	facts, err := baseimage.InspectContext(ctx, view{s: s}, s.size, baseimage.Options{ImagePath: s.disk.Path})
	if err != nil {
		return nil, nil, err
	}
	logf("base: %s, %s userland, boot partition mounted at %s", facts.PrettyName, facts.Arch, facts.FATMount)
	if facts.Boot.End() > s.headEnd {
		return nil, nil, fmt.Errorf("base image: the boot partition ends at byte %d, after the partition table said", facts.Boot.End())
	}
	m, err := card.Finish(ctx, s.head, facts, copied.InputSHA256, copied.Format)
	if err != nil {
		return nil, nil, err
	}
	if ranges, err = s.mapped(); err != nil {
		return nil, nil, err
	}
	if err := s.writeRanges(ctx, ranges, 0, s.headEnd, opts.Progress); err != nil {
		return nil, nil, err
	}
	mapped := make([]builder.MappedRange, len(ranges))
	for i, r := range ranges {
		mapped[i] = builder.MappedRange{Range: r}
	}
	res := &Result{Disk: s.disk, Written: s.total, Ranges: len(ranges)}
	if !opts.NoDiscard {
		res.Discarded = discardGaps(s.disk, s.dev, mapped, s.size)
	}
	if err := s.dev.Sync(); err != nil {
		return nil, nil, fmt.Errorf("sync %q: %w", s.disk.Path, err)
	}
	res.Write = time.Since(start)
	built := &builder.Result{Decoder: copied.Decoder, Manifest: m, Early: builder.EarlyNone}
	if opts.NoVerify {
		return built, res, nil
	}
	start = time.Now()
	sort.Slice(s.chunks, func(i, j int) bool { return s.chunks[i].off < s.chunks[j].off })
	if err := verifyChunks(ctx, view{s: s, expected: true}, s.disk, s.chunks, res.Written, opts.Progress); err != nil {
		return nil, nil, err
	}
	res.Verify, res.Verified = time.Since(start), true
	return built, res, nil
}
