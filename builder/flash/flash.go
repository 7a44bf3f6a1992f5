// Package flash writes a card onto an SD card, safely and verified: the
// disk is judged by the block-device model the Pi's disk steps use
// (firstboot/blockdev) and claimed exclusively before the first write, only
// the image's mapped ranges are written, and they are read back. Write
// puts a built image onto the disk (`nixpi flash IMAGE DEVICE`); Build
// builds the card onto it in one pass over the base (`nixpi flash --base`),
// finished by builder.CardFinish as `nixpi build` finishes it.
//
// flash.go is Write and the writing and read-back both use, disk.go the
// disk (what it is, whether it is in use, the claim), image.go IMAGE made
// ready to write, bmap.go which ranges to write, build.go Build.
package flash

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/termtext"
)

// Options is one `nixpi flash`.
type Options struct {
	// Image is the card image: a path or http(s) URL, raw or compressed,
	// as builder.Options.Base.
	Image string
	// SHA256 is Image's expected sha256 (as given, compressed); when
	// empty, Image.sha256 is used if there is one.
	SHA256 string
	// TempDir receives a compressed or downloaded Image decoded;
	// os.TempDir() when empty.
	TempDir string
	Device  string // the whole disk to write
	// Yes skips the typed confirmation.
	Yes bool
	// AllowNonRemovable accepts a disk that is neither removable nor on
	// USB or MMC (a loop device in tests).
	AllowNonRemovable bool
	NoVerify          bool
	// NoDiscard leaves the unmapped blocks as they are, old data and all.
	NoDiscard bool
	// Unmount unmounts the disk's mounted filesystems (in this mount
	// namespace) after the confirmation, instead of refusing the disk. The
	// disk holding / is refused all the same.
	Unmount bool
	// Root is where /sys and /proc are ("/").
	Root string
	// Confirm shows the disk's description and returns what the user typed
	// back; flash goes on only when it is the disk's name. Nil with !Yes
	// refuses.
	Confirm func(description, name string) (string, error)
	// Progress, when set, is called with the bytes done and the total, in
	// the write phase and again in the verify phase (phase "write",
	// "verify").
	Progress func(phase string, done, total int64)
	Log      func(msg string)
}

// Result is a finished flash.
type Result struct {
	Disk     *Disk
	FromBmap bool  // the ranges came from IMAGE.bmap
	Written  int64 // bytes written
	Ranges   int
	// Discarded is how many bytes between the ranges the disk was told
	// are unused (zero when it cannot discard).
	Discarded int64
	Write     time.Duration // writing and the final fsync
	Verify    time.Duration // zero with NoVerify
	Verified  bool
}

func (o Options) logf(format string, args ...any) {
	if o.Log != nil {
		o.Log(fmt.Sprintf(format, args...))
	}
}

func (o Options) rootDir() string {
	if o.Root == "" {
		return "/"
	}
	return o.Root
}

// ErrCardIncomplete marks a failure after the card was first written to.
var ErrCardIncomplete = errors.New("the card is incomplete: do not boot it, flash it again")

// flashChunk is the unit of the direct writes and reads: large, so the
// card sees few, long requests.
const flashChunk = 8 << 20

// Write writes opts.Image onto opts.Device after checking that the device
// is a disk nixpi may overwrite; it writes only the image's mapped ranges,
// syncs, then reads back and compares them. Any refusal happens before the
// device is opened for writing. An error after the first write wraps
// ErrCardIncomplete.
func Write(ctx context.Context, opts Options) (*Result, error) {
	logf := opts.logf
	disk, err := probeFlashDisk(opts)
	if err != nil {
		return nil, err
	}
	image, err := openFlashImage(ctx, opts, logf)
	if err != nil {
		return nil, err
	}
	defer image.remove()
	img, err := os.Open(image.path)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	defer img.Close()
	st, err := img.Stat()
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	size := st.Size()
	if disk.Size < size {
		return nil, fmt.Errorf("refusing %s: it is smaller than the image (%d bytes, the image %d): use a card of at least %s", disk, disk.Size, size, config.Size(size).Approx())
	}
	if size%disk.LogicalBlock != 0 {
		return nil, fmt.Errorf("image %q is %d bytes, not a whole number of the disk's %d-byte blocks: is it a disk image?", opts.Image, size, disk.LogicalBlock)
	}
	ranges, fromBmap, err := flashRanges(img, image.bmap, size)
	if err != nil {
		return nil, err
	}
	for _, r := range ranges {
		if r.Start%disk.LogicalBlock != 0 || r.End%disk.LogicalBlock != 0 {
			return nil, fmt.Errorf("refusing %s: its blocks are %d bytes and the range %d-%d of %s does not fall on them (a bmap with smaller blocks?)", disk, disk.LogicalBlock, r.Start, r.End, image.bmap)
		}
	}
	dev, err := disk.claim(opts, logf)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	res := &Result{Disk: disk, FromBmap: fromBmap, Ranges: len(ranges)}
	for _, r := range ranges {
		res.Written += r.End - r.Start
	}
	logf("writing %s of %s onto %s (%d ranges, from %s)", config.Size(res.Written).Approx(), config.Size(size).Approx(), disk, len(ranges), map[bool]string{true: "the .bmap", false: "the image's data ranges"}[fromBmap])
	// What is written is checked against the bmap's range hashes as it is
	// read; without them, the image's own sha256 is checked while it is
	// written (the hashing and the writing use different resources).
	checked := make(chan error, 1)
	if allHashed(ranges) {
		checked <- nil
	} else {
		go func() { checked <- checkImageSum(image) }()
	}
	start := time.Now()
	chunks, err := writeRanges(ctx, img, dev, ranges, res.Written, opts.Progress)
	if err == nil && !opts.NoDiscard {
		res.Discarded = discardGaps(disk, dev, ranges, size)
	}
	if err == nil {
		if err = dev.Sync(); err != nil {
			err = fmt.Errorf("sync %q: %w", disk.Path, err)
		}
	}
	res.Write = time.Since(start)
	if sumErr := <-checked; err == nil {
		err = sumErr
	}
	if err != nil {
		return nil, flashFailed(ctx, err)
	}
	if opts.NoVerify {
		return res, nil
	}
	start = time.Now()
	if err := verifyChunks(ctx, img, disk, chunks, res.Written, opts.Progress); err != nil {
		return nil, flashFailed(ctx, err)
	}
	res.Verify, res.Verified = time.Since(start), true
	return res, nil
}

// claim asks for the confirmation (unless opts.Yes), unmounts the disk's
// filesystems with opts.Unmount and checks again, then opens the disk
// exclusively, for direct writes: from then to the end nobody mounts or
// partitions it while it is written. Nothing is written here.
func (d *Disk) claim(opts Options, logf func(string, ...any)) (*os.File, error) {
	var unmount []string
	if opts.Unmount {
		var err error
		if unmount, err = d.mountPoints(); err != nil {
			return nil, fmt.Errorf("refusing %s: %w", d, err)
		}
	}
	if !opts.Yes {
		if opts.Confirm == nil {
			return nil, fmt.Errorf("refusing %s: no confirmation (pass --yes when nothing can ask)", d)
		}
		description := d.Describe()
		for _, m := range unmount {
			description += fmt.Sprintf("  mounted at %q: unmounted first (--unmount)\n", m)
		}
		typed, err := opts.Confirm(description, termtext.Line(d.Name))
		if err != nil {
			return nil, fmt.Errorf("confirmation: %w; %s was not changed", err, d.Path)
		}
		if typed != d.Name && typed != d.Path {
			return nil, fmt.Errorf("confirmation %q is not %q: %s was not changed", typed, d.Name, d.Path)
		}
	}
	for i := len(unmount) - 1; i >= 0; i-- { // the deepest first
		logf("unmounting %q", unmount[i])
		if err := unix.Unmount(unmount[i], 0); err != nil {
			return nil, fmt.Errorf("unmount %q: %w (close what uses it and try again); %s was not written", unmount[i], err, d.Path)
		}
	}
	if len(unmount) > 0 {
		if err := d.checkUnused(false); err != nil {
			return nil, err
		}
	}
	return d.openExclusive()
}

func flashFailed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", ErrCardIncomplete)
	}
	return fmt.Errorf("%w: %w", err, ErrCardIncomplete)
}

// allHashed says whether every range carries the image's hash.
func allHashed(ranges []builder.MappedRange) bool {
	for _, r := range ranges {
		if r.SHA256 == "" {
			return false
		}
	}
	return len(ranges) > 0
}

// checkImageSum compares the image file with the sha256 its .sha256 or
// --sha256 gives, when one does.
func checkImageSum(image *flashImage) error {
	if image.sha256 == "" {
		return nil
	}
	f, err := os.Open(image.path)
	if err != nil {
		return err
	}
	defer f.Close()
	sum, err := builder.HashFile(f)
	if err != nil {
		return err
	}
	if sum != image.sha256 {
		return fmt.Errorf("image %q is damaged: its sha256 is %s, %s says %s", image.path, sum, image.checksumOrigin, image.sha256)
	}
	return nil
}

// discardGaps tells a disk that can discard that the image's unmapped
// blocks are free, so the card need not keep its old data there: nothing
// reads them, and a card with fewer blocks in use writes faster. A disk
// that cannot, or a discard that fails, changes nothing that matters.
func discardGaps(disk *Disk, dev *os.File, ranges []builder.MappedRange, size int64) int64 {
	if limit := disk.Attr("queue/discard_max_bytes"); limit == "0" || limit == "" {
		return 0
	}
	var done, pos int64
	discard := func(start, end int64) bool {
		start = (start + disk.LogicalBlock - 1) / disk.LogicalBlock * disk.LogicalBlock
		end = end / disk.LogicalBlock * disk.LogicalBlock
		if start >= end {
			return true
		}
		arg := [2]uint64{uint64(start), uint64(end - start)}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, dev.Fd(), unix.BLKDISCARD, uintptr(unsafe.Pointer(&arg)))
		if errno != 0 {
			return false
		}
		done += end - start
		return true
	}
	for _, r := range ranges {
		if r.Start > pos && !discard(pos, r.Start) {
			return done
		}
		pos = r.End
	}
	if pos < size {
		discard(pos, size)
	}
	return done
}

// chunk is one direct write, with the sha256 of the image's bytes.
type chunk struct {
	off, n int64
	sum    [sha256.Size]byte
	// blocks are the CRC-32Cs of its 4 KiB blocks when the image's bytes
	// are not kept to compare with (flash --base): they find the first
	// bad block.
	blocks []uint32
}

// verifyBlock is the unit chunk.blocks check.
const verifyBlock = 4096

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// blockSums are the CRC-32Cs of b's verifyBlock-byte blocks.
func blockSums(b []byte) []uint32 {
	sums := make([]uint32, 0, (len(b)+verifyBlock-1)/verifyBlock)
	for i := 0; i < len(b); i += verifyBlock {
		sums = append(sums, crc32.Checksum(b[i:min(i+verifyBlock, len(b))], castagnoli))
	}
	return sums
}

// alignedBuffer is n bytes aligned to a page, as O_DIRECT needs.
func alignedBuffer(n int) ([]byte, error) {
	return unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
}

// writeRanges copies ranges from img to dev in chunks, reading the next
// chunk while the last is written. A range's bmap checksum is checked
// against the image as it is read.
func writeRanges(ctx context.Context, img, dev *os.File, ranges []builder.MappedRange, total int64, progress func(string, int64, int64)) ([]chunk, error) {
	type filled struct {
		c   chunk
		buf []byte
	}
	free := make(chan []byte, 2)
	for range 2 {
		b, err := alignedBuffer(flashChunk)
		if err != nil {
			return nil, err
		}
		defer unix.Munmap(b)
		free <- b
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	full := make(chan filled, 1)
	readErr := make(chan error, 1)
	go func() {
		defer close(full)
		readErr <- func() error {
			for _, r := range ranges {
				var rangeHash hash.Hash
				if r.SHA256 != "" {
					rangeHash = sha256.New()
				}
				for off := r.Start; off < r.End; {
					var buf []byte
					select {
					case buf = <-free:
					case <-ctx.Done():
						return ctx.Err()
					}
					n := min(int64(len(buf)), r.End-off)
					if _, err := img.ReadAt(buf[:n], off); err != nil {
						return fmt.Errorf("read image at byte %d: %w", off, err)
					}
					// The chunk's hash and the range's at once: with a
					// bmap every byte is hashed twice here.
					c := chunk{off: off, n: n}
					summed := make(chan struct{})
					go func() {
						c.sum = sha256.Sum256(buf[:n])
						close(summed)
					}()
					if rangeHash != nil {
						rangeHash.Write(buf[:n])
					}
					<-summed
					off += n
					if off == r.End && rangeHash != nil && hex.EncodeToString(rangeHash.Sum(nil)) != r.SHA256 {
						return fmt.Errorf("the image does not match its .bmap in bytes %d-%d (the image changed after the bmap was made: rebuild it, or remove the .bmap)", r.Start, r.End)
					}
					full <- filled{c, buf}
				}
			}
			return nil
		}()
	}()
	// The reader must be done with the buffers before they are unmapped.
	defer func() {
		cancel()
		for range full {
		}
	}()
	var chunks []chunk
	var done int64
	for f := range full {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if _, err := dev.WriteAt(f.buf[:f.c.n], f.c.off); err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the path is in the message already
			}
			return nil, fmt.Errorf("write %q at byte %d: %w", dev.Name(), f.c.off, err)
		}
		free <- f.buf
		chunks = append(chunks, f.c)
		done += f.c.n
		if progress != nil {
			progress("write", done, total)
		}
	}
	if err := <-readErr; err != nil {
		return nil, err
	}
	return chunks, nil
}

// verifyChunks reads every written chunk back from the disk, bypassing
// the page cache, and compares it with the image's; a mismatch names the
// first byte that differs. The chunks are hashed on every CPU while the
// next ones are read, so the read-back takes about one direct read of
// them, not that plus the hashing.
func verifyChunks(ctx context.Context, img io.ReaderAt, disk *Disk, chunks []chunk, total int64, progress func(string, int64, int64)) error {
	fd, err := unix.Open(disk.Path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("verify: open %q: %w", disk.Path, err)
	}
	dev := os.NewFile(uintptr(fd), disk.Path)
	defer dev.Close()
	read := func(buf []byte, c chunk) error {
		if _, err := io.ReadFull(io.NewSectionReader(dev, c.off, c.n), buf[:c.n]); err != nil {
			return fmt.Errorf("verify: read %q at byte %d: %w", disk.Path, c.off, err)
		}
		return nil
	}
	hashers := runtime.GOMAXPROCS(0)
	free := make(chan []byte, hashers+1)
	for range hashers + 1 {
		buf, err := alignedBuffer(flashChunk)
		if err != nil {
			return err
		}
		defer unix.Munmap(buf)
		free <- buf
	}
	bad := make([]bool, len(chunks)) // each set by one hasher
	var anyBad atomic.Bool
	var hashing sync.WaitGroup
	var done int64
	err = func() error {
		defer hashing.Wait() // before the buffers go
		for i, c := range chunks {
			if err := ctx.Err(); err != nil {
				return err
			}
			if anyBad.Load() {
				return nil
			}
			buf := <-free
			if err := read(buf, c); err != nil {
				return err
			}
			hashing.Add(1)
			go func() {
				defer hashing.Done()
				if sha256.Sum256(buf[:c.n]) != c.sum {
					bad[i] = true
					anyBad.Store(true)
				}
				free <- buf
			}()
			done += c.n
			if progress != nil {
				progress("verify", done, total)
			}
		}
		return nil
	}()
	if err != nil {
		return err
	}
	i := slices.Index(bad, true)
	if i < 0 {
		return nil
	}
	c, buf := chunks[i], <-free
	if err := read(buf, c); err != nil {
		return err
	}
	want := make([]byte, c.n)
	if _, err := img.ReadAt(want, c.off); errors.Is(err, errNotKept) {
		got := blockSums(buf[:c.n])
		for k := range c.blocks {
			if got[k] != c.blocks[k] {
				return fmt.Errorf("verify: %s differs from what was written at byte %d, in the %d bytes there (the card does not keep what was written: try another card)", disk.Path, c.off+int64(k)*verifyBlock, min(verifyBlock, c.n-int64(k)*verifyBlock))
			}
		}
		return fmt.Errorf("verify: %s differs from what was written in bytes %d-%d (the card does not keep what was written: try another card)", disk.Path, c.off, c.off+c.n)
	} else if err != nil {
		return fmt.Errorf("verify: read image at byte %d: %w", c.off, err)
	}
	j := int64(0)
	for j < c.n && want[j] == buf[j] {
		j++
	}
	return fmt.Errorf("verify: %s differs from the image at byte %d (the card does not keep what was written: try another card)", disk.Path, c.off+j)
}

func (d *Disk) checkRemovable(allowNonRemovable bool) error {
	if !d.Removable && !allowNonRemovable {
		return fmt.Errorf("refusing %s: it is not removable and not on USB or MMC, so it is not an SD card (an internal disk?); pass --allow-non-removable only if you are sure", d)
	}
	return nil
}
