package builder

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"strings"

	"github.com/nixpi/nixpi/assets"
	"github.com/nixpi/nixpi/builder/baseimage"
	"github.com/nixpi/nixpi/builder/source"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/configcheck"
)

// CardFinish is what makes a copied base a card, read once from one
// build's inputs (NewCardFinish): the config checked as the Pi will check
// it, the device binaries and the epoch. Its Finish is the one sequence
// that writes a card (the device binary for the image's architecture, the
// payload, the config, the cmdline.txt hook, the manifest that lists them);
// Build, the early card and `flash --base` (builder/flash) all call it, so
// the card is the same bytes whichever writes it. OpenBase and CopyBase
// are how each of them reads the base, and say, once, what nothing
// verifies.
type CardFinish struct {
	opts         Options
	config       []byte // canonical: what goes onto the card
	configSHA256 string // of the config as given
	private      bool
}

// NewCardFinish reads and checks the config first: it is the cheapest input
// to get wrong. opts.DeviceBinary nil means assets.DeviceBinary.
func NewCardFinish(opts Options) (*CardFinish, error) {
	if err := checkCardInputs(opts); err != nil {
		return nil, err
	}
	if opts.DeviceBinary == nil {
		opts.DeviceBinary = assets.DeviceBinary
	}
	cfg, raw, canonical, err := readConfig(opts)
	if err != nil {
		return nil, err
	}
	return &CardFinish{opts: opts, config: canonical, configSHA256: sha256Hex(raw), private: carriesSecret(cfg)}, nil
}

// checkCardInputs refuses a build that names no base or no config.
func checkCardInputs(opts Options) error {
	if opts.Base == "" {
		return fmt.Errorf("no base image: pass --base with a Raspberry Pi OS image path or URL")
	}
	if opts.Config == "" {
		return fmt.Errorf("no install config: pass --config nixpi.toml (`nixpi config init > nixpi.toml` writes an example)")
	}
	return nil
}

// Private says the config carries a secret (a Wi-Fi key, a password hash):
// the card is for its owner's eyes only.
func (c *CardFinish) Private() bool { return c.private }

// Finish writes the card into the boot partition of the image in f: base is
// what identifying the image found (or what the early card predicts it
// will), baseSHA256 and format are the base's as given, for the manifest.
// config.txt and everything else on the partition stay as they are. It
// returns the card's manifest.
func (c *CardFinish) Finish(ctx context.Context, f *os.File, base *baseimage.Base, baseSHA256 string, format source.Format) (*Manifest, error) {
	binary, err := deviceBinary(c.opts.DeviceBinary, base.Arch)
	if err != nil {
		return nil, err
	}
	m := &Manifest{
		NixpiVersion: assets.Version,
		Config:       ManifestInput{SHA256: c.configSHA256},
		Base:         ManifestBase{SHA256: baseSHA256, Format: format.String(), Arch: base.Arch, BootDir: base.FATMount},
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := writeCard(ctx, f, base, cardFiles{epoch: c.opts.Epoch, binary: binary, config: c.config, manifest: m}); err != nil {
		return nil, err
	}
	return m, nil
}

// OpenBase opens the base image, warning when nothing verifies it. A local
// raw image is validated before anything is copied, so the common mistakes
// cost no time. inputHashed receives the base's sha256 as soon as it is
// known (source.Options).
func (c *CardFinish) OpenBase(ctx context.Context, inputHashed func(string)) (*source.Source, error) {
	src, err := openBase(ctx, c.opts, inputHashed)
	if err != nil {
		return nil, err
	}
	if src.Checksum == "" {
		c.warnf("%s", unverifiedWarning(c.opts.Base))
	}
	return src, nil
}

// CopyBase decodes src into dst and, when nothing verified the base, says
// its sha256 to compare with its publisher's. A file (Build's) is decoded
// as source.Source.WriteTo decodes, anything else (flash's disk) streamed
// front to back.
func (c *CardFinish) CopyBase(ctx context.Context, src *source.Source, dst source.Sink) (source.Stats, error) {
	var copied source.Stats
	var err error
	if f, ok := dst.(*os.File); ok {
		copied, err = src.WriteTo(ctx, f)
	} else {
		copied, err = src.Stream(ctx, dst)
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return copied, err
	}
	if src.Checksum == "" {
		c.warnf("the unverified base's sha256 is %s: compare it with the one its publisher lists", copied.InputSHA256)
	}
	return copied, nil
}

func (c *CardFinish) warnf(format string, args ...any) { warnf(c.opts, format, args...) }

// readConfig reads the install config and checks it as the Pi will
// (configcheck), so a card never carries a config the Pi refuses after
// wiping the SSD. It returns it as given, and canonical (what goes onto the
// card).
func readConfig(opts Options) (cfg *config.Config, raw, canonical []byte, err error) {
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
		logTo(opts, "warning: %s", w)
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

func logTo(opts Options, format string, args ...any) {
	if opts.Log != nil {
		opts.Log(fmt.Sprintf(format, args...))
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
