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
// fat.go (the FAT edits), manifest.go. early.go writes the FAT while the
// base is still decoded, when it can (Result.Early says whether it did);
// hash.go hashes the image. inspect.go reads a card back.
package builder

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"strings"
	"time"

	"github.com/google/renameio/v2"

	"github.com/nixpi/nixpi/assets"
	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/builder/source"
	"github.com/nixpi/nixpi/firstboot/config"
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
	if opts.Base == "" {
		return nil, fmt.Errorf("no base image: pass --base with a Raspberry Pi OS image path or URL")
	}
	if opts.Config == "" {
		return nil, fmt.Errorf("no install config: pass --config nixpi.toml (`nixpi config init > nixpi.toml` writes an example)")
	}
	if err := checkOutput(opts); err != nil {
		return nil, err
	}
	if opts.DeviceBinary == nil {
		opts.DeviceBinary = assets.DeviceBinary
	}
	logf := func(format string, args ...any) {
		if opts.Log != nil {
			opts.Log(fmt.Sprintf(format, args...))
		}
	}

	cfg, files, err := readCardInputs(opts, logf)
	if err != nil {
		return nil, err
	}
	m := files.manifest

	for _, line := range removeLeftovers(opts.Out) {
		logf("%s", line)
	}
	mode := modeShared
	if carriesSecret(cfg) {
		mode = modePrivate
	}
	out, err := createPending(opts.Out, mode)
	if err != nil {
		return nil, err
	}
	defer out.Discard()

	early := newEarlyCard(out, files, opts, logf)

	logf("copying base image %s", opts.Base)
	src, err := openBase(ctx, opts, early.baseHashed)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	if src.Checksum == "" {
		warnf(opts, "%s", unverifiedWarning(opts.Base))
	}
	// While the base is decoded front to back, the boot partition can be
	// written as soon as it is final and the hash can follow the decoder.
	early = early.start(ctx, src)
	copied, err := src.WriteTo(ctx, out.file)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		early.finish(nil, "")
		return nil, err
	}
	if src.Checksum == "" {
		warnf(opts, "the unverified base's sha256 is %s: compare it with the one its publisher lists", copied.InputSHA256)
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
	res := &Result{Out: opts.Out, Decoder: copied.Decoder, Early: used, Private: mode == modePrivate}
	if used == EarlyUsed {
		m, res.SHA256 = early.manifest, early.sum
	} else {
		m.Base = ManifestBase{SHA256: copied.InputSHA256, Format: copied.Format.String(), Arch: facts.Arch, BootDir: facts.FATMount}
		if files.binary, err = deviceBinary(opts.DeviceBinary, facts.Arch); err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := writeCard(ctx, out.file, facts, files); err != nil {
			return nil, err
		}
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
	res.Manifest = m
	return res, nil
}

// readCardInputs reads and checks the config, first: it is the cheapest
// input to get wrong. It returns the card's files so far, and its manifest
// to fill in.
func readCardInputs(opts Options, logf func(format string, args ...any)) (*config.Config, cardFiles, error) {
	if opts.Config == "" {
		return nil, cardFiles{}, fmt.Errorf("no install config: pass --config nixpi.toml (`nixpi config init > nixpi.toml` writes an example)")
	}
	cfg, raw, canonical, err := readConfig(opts, logf)
	if err != nil {
		return nil, cardFiles{}, err
	}
	m := &Manifest{NixpiVersion: assets.Version, Config: ManifestInput{SHA256: sha256Hex(raw)}}
	return cfg, cardFiles{epoch: opts.Epoch, config: canonical, manifest: m}, nil
}

// readConfig reads the install config and checks it as the Pi will
// (configcheck), so a card never carries a config the Pi refuses after
// wiping the SSD. It returns it as given, and canonical (what goes onto the
// card).
func readConfig(opts Options, logf func(format string, args ...any)) (cfg *config.Config, raw, canonical []byte, err error) {
	path := opts.Config
	raw, err = config.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil, fmt.Errorf("read config: %w (`nixpi config init > nixpi.toml` writes an example to start from)", err)
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read config: %w", err)
	}
	// Not cancelled with the build: parsing takes milliseconds, and a
	// Ctrl-C reaches nix-instantiate through the terminal all the same.
	res, err := configcheck.Check(context.Background(), path, raw, opts.NixParser)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("config: %w", err)
	}
	cfg = res.Config
	if res.ModuleParsedBy != "" && !opts.NixParser.ByNix() {
		warnf(opts, "nixos.extra_module was checked by nixpi's own bracket check only, not parsed by Nix (no nix-instantiate on PATH): a syntax error it misses stops the install on the Pi; install Nix (apt-get install nix-bin) to have it parsed before the card is written")
	}
	for _, w := range cfg.Warnings() {
		logf("warning: %s", w)
	}
	if canonical, err = config.Encode(cfg); err != nil {
		return nil, nil, nil, fmt.Errorf("config: encode: %w", err)
	}
	return cfg, raw, canonical, nil
}

func warnf(opts Options, format string, args ...any) {
	if opts.Warn != nil {
		opts.Warn(fmt.Sprintf(format, args...))
	}
}

// unverifiedWarning says that nothing checks base, what that risks and how
// to verify it.
func unverifiedWarning(base string) string {
	risk, https := "a damaged or substituted file would go unnoticed", ""
	if source.IsURL(base) && strings.EqualFold(base[:len("http:")], "http:") {
		risk, https = "it comes over plain http, so anyone between you and the server can change it unnoticed", ", and use https"
	}
	return fmt.Sprintf("nothing verifies the base image %s (no --sha256, no %s.sha256 beside it): %s; "+
		"pass --sha256 with the checksum its publisher lists (Raspberry Pi publishes one beside every image)%s", base, base, risk, https)
}

// carriesSecret says whether cfg holds a secret (a Wi-Fi key, a password
// hash): redacting it changes it.
func carriesSecret(cfg *config.Config) bool {
	return !reflect.DeepEqual(cfg, cfg.Redacted())
}
