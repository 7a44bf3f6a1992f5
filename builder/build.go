// Package builder turns a Raspberry Pi OS image into a nixpi card image: it
// copies the base (builder/source), checks it is a Raspberry Pi OS-shaped
// image (builder/baseimage), and writes the first-boot hook, the device
// binary, its payload, the validated config and a manifest into the FAT
// partition (builder/fatfs). Partition 2 is never written.
//
// One file per phase, in pipeline order: output.go (where OUT may go, the
// temporary file, the atomic rename), copy.go (decompress and verify the
// base), identify.go (validate it), device.go (pick the device binary),
// epoch.go (the time every file carries), payload.go (payload.cpio),
// finish.go (CardFinish: the one sequence that makes a copied base a card,
// and the warnings about the base), fat.go (the FAT edits), manifest.go.
// early.go writes the FAT while the base is still decoded, when it can
// (Result.Early says whether it did); hash.go hashes the image. inspect.go
// reads a card back.
package builder

import (
	"context"
	"fmt"
	"time"

	"github.com/google/renameio/v2"

	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/firstboot/configcheck"
)

// Options is one build.
type Options struct {
	// Base is the Raspberry Pi OS image: a path or an http(s) URL, raw or
	// compressed (xz, gzip, zstd, zip holding one .img).
	Base string
	// SHA256 is the base's expected sha256 in hex. When empty, a sidecar
	// Base+".sha256" is used if there is one.
	SHA256 string
	// Config is the path of the install config (nixpi.toml).
	Config string
	// NixParser parses nixos.extra_module and the generated configuration
	// when the config is checked (configcheck.FindParser); the zero value
	// is nixpi's own bracket check, which a warning then names.
	NixParser configcheck.Parser
	// Out is the card image to write. It must not exist unless Force.
	Out   string
	Force bool
	// Epoch is the time of every file nixpi writes (SOURCE_DATE_EPOCH).
	// Nil derives it from the base, never from the clock.
	Epoch *time.Time
	// DeviceBinary returns nixpi-firstboot for linux/GOARCH ("arm64", "arm").
	// Nil means assets.DeviceBinary, the binaries embedded by `make build`.
	// It may be called while the base is decoded, from another goroutine,
	// and a second time for another GOARCH when the first guess was wrong.
	DeviceBinary func(goarch string) ([]byte, error)
	// Progress, when set, is called as the base is read with the input
	// bytes consumed and the input size (-1 when unknown).
	Progress func(done, total int64)
	// Log, when set, receives one line per phase.
	Log func(msg string)
	// Warn, when set, receives what the user must hear even when Log is
	// quiet: a base that nothing verifies.
	Warn func(msg string)

	// predictRoot replaces predictRoot in tests.
	predictRoot func(*baseimage.Base) rootGuess
}

// Result is a finished build.
type Result struct {
	Out      string
	SHA256   string // of Out, hex
	Manifest *Manifest
	// Decoder is what decompressed the base (source.Stats.Decoder).
	Decoder string
	// Early says whether the boot partition written while the base was
	// decoded is the card's.
	Early Early
	// Private says Out is readable by its owner only (mode 0600): the
	// config on its FAT carries a secret.
	Private bool
}

// Build writes opts.Out. On any error, or when ctx is cancelled, nothing is
// left behind: no Out, no temporary file.
func Build(ctx context.Context, opts Options) (*Result, error) {
	if err := checkCardInputs(opts); err != nil {
		return nil, err
	}
	if err := checkOutput(opts); err != nil {
		return nil, err
	}
	logf := func(format string, args ...any) { logTo(opts, format, args...) }
	card, err := NewCardFinish(opts)
	if err != nil {
		return nil, err
	}

	for _, line := range removeLeftovers(opts.Out) {
		logf("%s", line)
	}
	mode := modeShared
	if card.Private() {
		mode = modePrivate
	}
	out, err := createPending(opts.Out, mode)
	if err != nil {
		return nil, err
	}
	defer out.Discard()

	early := newEarlyCard(out, card, opts, logf)

	logf("copying base image %s", opts.Base)
	src, err := card.OpenBase(ctx, early.baseHashed)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	// While the base is decoded front to back, the boot partition can be
	// written as soon as it is final and the hash can follow the decoder.
	early = early.start(ctx, src)
	copied, err := card.CopyBase(ctx, src, out.file)
	if err != nil {
		early.finish(nil, "")
		return nil, err
	}
	facts, used, err := early.finish(func() (*baseimage.Base, error) {
		facts, err := identifyBase(ctx, out.file)
		if err == nil {
			logf("base: %s, %s userland, boot partition mounted at %s", facts.PrettyName, facts.Arch, facts.FATMount)
		}
		return facts, err
	}, copied.InputSHA256)
	if err != nil {
		return nil, err
	}
	res := &Result{Out: opts.Out, Decoder: copied.Decoder, Early: used, Private: card.Private()}
	if used == EarlyUsed {
		res.Manifest, res.SHA256 = early.manifest, early.sum
	} else if res.Manifest, err = card.Finish(ctx, out.file, facts, copied.InputSHA256, copied.Format); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	bmap, err := bmapOf(out.Path())
	if err != nil {
		return nil, err
	}
	logf("writing %s", opts.Out)
	if res.SHA256, err = out.Commit(res.SHA256, opts.Force); err != nil {
		return nil, err
	}
	// The bmap's range hashes could let a guess at a secret on the FAT be
	// checked offline: it is as private as the card.
	if err := renameio.WriteFile(opts.Out+".bmap", bmap, mode.Perm()&0o644); err != nil {
		return nil, fmt.Errorf("write %q: %w", opts.Out+".bmap", err)
	}
	return res, nil
}
