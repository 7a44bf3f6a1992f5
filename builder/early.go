package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/builder/source"
	"github.com/nixpi/nixpi/firstboot/bootfiles"
)

// earlyCard writes the card's boot partition while the base is still being
// decoded, so that hashing the image can follow the decoder instead of
// starting when it ends: the boot partition comes before the root in the
// image, and the hash cannot pass it before it is final. Two things the
// edit needs are not known that early, so they are predicted:
//   - from the root partition, the userland architecture and where the FAT
//     is mounted: predictRoot reads them off the boot partition;
//   - the base's sha256 for the manifest: the expected checksum, or the
//     input's digest, which a local xz base has long before it is decoded.
//
// Build starts it (start) and, once the base is decoded, ends it (finish),
// which compares the prediction with what identifying the whole image
// finds. When they differ, the boot partition is put back as decoded and
// written again the ordinary way: the card is the same either way, only
// later. Anything unexpected here just ends the prediction; identifying the
// whole image reports what is wrong with it.
type earlyCard struct {
	out        *pendingOutput
	card       *CardFinish
	baseSHA256 chan string   // the input's digest, once known
	format     source.Format // of the base
	predict    func(*baseimage.Base) rootGuess
	logf       func(format string, args ...any)

	decoded chan struct{} // closed by finish: the decoder is done
	cancel  context.CancelFunc
	done    chan struct{}
	// Valid once done is closed.
	guess    rootGuess
	manifest *Manifest
	snapshot *os.File // the boot partition as decoded, once the edit began
	sum      string   // the whole image's sha256, when hashing reached its end
	stopped  error    // why the prediction ended early
}

// Early says what became of the early card.
type Early string

const (
	EarlyNone      Early = ""            // not tried: the decoder does not write in order
	EarlyUsed      Early = "used"        // it is the card
	EarlyWrong     Early = "wrong guess" // the prediction was wrong: written again
	EarlyAbandoned Early = "abandoned"   // it ended before it was complete: written the ordinary way
)

// rootGuess is what the boot partition edit depends on besides the boot
// partition itself and the user's inputs.
type rootGuess struct {
	Boot       baseimage.Partition
	Arch       string // userland architecture, "arm64" or "armhf"
	FATMount   string // where /etc/fstab mounts the FAT
	BaseSHA256 string
}

// predictRoot guesses from the boot partition what identifying the root
// will find. Raspberry Pi OS's arm64 images switch the Pi to 64 bits in
// config.txt and its armhf images do not; images before Bookworm mount the
// FAT at /boot and name raspi-config's resize script in cmdline.txt, later
// ones mount it at /boot/firmware.
func predictRoot(b *baseimage.Base) rootGuess {
	g := rootGuess{Boot: b.Boot, Arch: "armhf", FATMount: "/boot/firmware"}
	if on, _ := bootfiles.Arm64Effective(b.ConfigTxt); on {
		g.Arch = "arm64"
	}
	if strings.Contains(b.Cmdline, "init=/usr/lib/raspi-config/init_resize.sh") {
		g.FATMount = "/boot"
	}
	return g
}

// newEarlyCard prepares the early card for out; start runs it.
func newEarlyCard(out *pendingOutput, card *CardFinish, opts Options, logf func(format string, args ...any)) *earlyCard {
	e := &earlyCard{out: out, card: card, baseSHA256: make(chan string, 1), predict: opts.predictRoot, logf: logf}
	if e.predict == nil {
		e.predict = predictRoot
	}
	return e
}

// baseHashed receives the base's sha256 once it is known
// (source.Options.InputHashed).
func (e *earlyCard) baseHashed(sum string) {
	select {
	case e.baseSHA256 <- sum:
	default: // the expected checksum is there already
	}
}

// start runs the early edit while src is decoded, until the decoder is
// done (finish) and the hash has caught up, or until the prediction ends.
// When src's decoder does not write front to back there is no early card:
// start returns nil, whose finish only identifies.
func (e *earlyCard) start(ctx context.Context, src *source.Source) *earlyCard {
	if !src.WritesInOrder() {
		return nil
	}
	if src.Checksum != "" {
		e.baseHashed(src.Checksum)
	}
	e.format = src.Format
	ctx, e.cancel = context.WithCancel(ctx)
	e.decoded, e.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(e.done)
		e.stopped = e.run(ctx, e.decoded)
	}()
	return e
}

// finish is called once the decoder is done. It waits for the early edit,
// then identifies the image with identify and says what became of the
// early card. When it is the card (EarlyUsed), e.manifest and e.sum are
// the card's; otherwise the boot partition is as decoded again. A nil
// identify (the decoding failed) just ends the edit. Either way the
// snapshot is gone. A nil e only identifies.
func (e *earlyCard) finish(identify func() (*baseimage.Base, error), baseSHA256 string) (*baseimage.Base, Early, error) {
	switch {
	case identify == nil && e != nil:
		e.cancel()
		<-e.done
		e.removeSnapshot()
		return nil, EarlyAbandoned, nil
	case identify == nil:
		return nil, EarlyNone, nil
	case e == nil:
		facts, err := identify()
		return facts, EarlyNone, err
	}
	defer e.removeSnapshot()
	close(e.decoded)
	<-e.done
	e.cancel()
	// A partly written card is put back before the image is identified.
	if e.stopped != nil || e.sum == "" {
		if err := e.undo(); err != nil {
			return nil, EarlyAbandoned, err
		}
		facts, err := identify()
		return facts, EarlyAbandoned, err
	}
	facts, err := identify()
	if err != nil {
		return nil, EarlyUsed, err
	}
	if e.guess != (rootGuess{Boot: facts.Boot, Arch: facts.Arch, FATMount: facts.FATMount, BaseSHA256: baseSHA256}) {
		e.logf("boot partition written early for %s userland mounted at %s, but the base is %s mounted at %s: writing it again",
			e.guess.Arch, e.guess.FATMount, facts.Arch, facts.FATMount)
		return facts, EarlyWrong, e.undo()
	}
	e.logf("boot partition written and image hashed while the base was decoded")
	return facts, EarlyUsed, nil
}

func (e *earlyCard) run(ctx context.Context, decoded <-chan struct{}) error {
	f := e.out.file
	if err := waitForSize(ctx, f, 512, decoded); err != nil {
		return err
	}
	boot, err := baseimage.BootPartition(f)
	if err != nil {
		return err
	}
	if err := waitForSize(ctx, f, boot.End(), decoded); err != nil {
		return err
	}
	base, err := baseimage.InspectBoot(f)
	if err != nil {
		return err
	}
	guess := e.predict(base)
	select {
	case guess.BaseSHA256 = <-e.baseSHA256:
	default:
		select {
		case guess.BaseSHA256 = <-e.baseSHA256:
		case <-decoded:
			return errors.New("the base's sha256 was not known before it was decoded")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	e.guess = guess
	if e.snapshot, err = snapshotRegion(e.out, guess.Boot); err != nil {
		return err
	}
	base.Boot, base.Arch, base.FATMount = guess.Boot, guess.Arch, guess.FATMount
	if e.manifest, err = e.card.Finish(ctx, f, base, guess.BaseSHA256, e.format); err != nil {
		return err
	}
	hasher, err := newImageHasher(f.Name())
	if err != nil {
		return err
	}
	defer hasher.Close()
	if err := hasher.follow(ctx, decoded); err != nil {
		return err
	}
	e.sum = hasher.Sum()
	return nil
}

// undo puts the boot partition back as decoded, if the early edit began.
func (e *earlyCard) undo() error {
	if e.snapshot == nil {
		return nil
	}
	return restoreRegion(e.out, e.snapshot, e.guess.Boot)
}

func (e *earlyCard) removeSnapshot() {
	if e.snapshot != nil {
		e.snapshot.Close()
		os.Remove(e.snapshot.Name())
		e.snapshot = nil
	}
}

// waitForSize waits until f holds at least size bytes. A decoder writing
// front to back has then written everything before size for good.
func waitForSize(ctx context.Context, f *os.File, size int64, decoded <-chan struct{}) error {
	for {
		st, err := f.Stat()
		if err != nil {
			return err
		}
		if st.Size() >= size {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-decoded:
			if st, err := f.Stat(); err == nil && st.Size() >= size {
				return nil
			}
			return fmt.Errorf("the image ends before byte %d", size)
		case <-time.After(followInterval):
		}
	}
}

// snapshotRegion copies partition p of the output, as decoded, into a
// temporary file next to it.
func snapshotRegion(out *pendingOutput, p baseimage.Partition) (*os.File, error) {
	src, err := os.Open(out.Path()) // own descriptor: seeking here must not move the decoder's
	if err != nil {
		return nil, err
	}
	defer src.Close()
	snap, err := os.CreateTemp(filepath.Dir(out.Path()), ".nixpi-build-*.fat")
	if err != nil {
		return nil, err
	}
	err = copyData(snap, 0, src, p.Start, p.Size)
	if err == nil {
		err = snap.Truncate(p.Size) // a trailing hole counts
	}
	if err != nil {
		snap.Close()
		os.Remove(snap.Name())
		return nil, fmt.Errorf("keep a copy of the boot partition: %w", err)
	}
	return snap, nil
}

// restoreRegion puts partition p of the output back from its snapshot.
func restoreRegion(out *pendingOutput, snap *os.File, p baseimage.Partition) error {
	err := unix.Fallocate(int(out.file.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, p.Start, p.Size)
	if err == nil {
		err = copyData(out.file, p.Start, snap, 0, p.Size)
	} else if errors.Is(err, unix.EOPNOTSUPP) {
		// No holes on this file system: write all of it.
		_, err = io.Copy(io.NewOffsetWriter(out.file, p.Start), io.NewSectionReader(snap, 0, p.Size))
	}
	if err != nil {
		return fmt.Errorf("restore the boot partition from its copy: %w", err)
	}
	return nil
}

// copyData copies the data of src's bytes [off, off+n) to dst at dstOff,
// skipping holes; dst must read as zeros there. src's file position moves.
func copyData(dst *os.File, dstOff int64, src *os.File, off, n int64) error {
	return source.WalkData(src, off, off+n, func(data, hole int64) error {
		_, err := io.Copy(io.NewOffsetWriter(dst, dstOff+data-off), io.NewSectionReader(src, data, hole-data))
		return err
	})
}
