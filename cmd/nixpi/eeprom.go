package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/inputfile"
)

const eepromUsage = `usage: nixpi eeprom config IMAGE [--out FILE] [--force]
       nixpi eeprom config IMAGE --config FILE [--digest SIGFILE] [--pubkey PEM] --out OUT [--force]
       nixpi eeprom config IMAGE --set KEY=VALUE [--set ...] [--config FILE] --out OUT [--force]
       nixpi eeprom digest IMAGE --out SIG [--timestamp N] [--force]

Reads or changes a Raspberry Pi 4 bootloader EEPROM image (pieeprom-*.bin).
Images written are byte-identical to what rpi-eeprom-config writes.

config   print bootconf.txt (or write it to --out); with --config and/or --set,
         write a copy of IMAGE to OUT with the config replaced. --set replaces
         the first KEY= line, else adds it to the [all] section; BOOT_ORDER
         values are checked (e.g. 0xf41: SD, then USB, then restart).
         --digest/--pubkey (signed boot) store the .sig made by
         rpi-eeprom-digest -k for the --config file and the RSA public key.
digest   write the .sig for a staged update: sha256 and "ts: N", N from
         --timestamp, else SOURCE_DATE_EPOCH, else now.

--out is written as build writes its card: never over an input, an existing
file only with --force, and atomically (the old file or the new one, never
half of one).
`

func runEeprom(c *cli, args []string) int {
	if len(args) == 0 {
		return c.eepromUsage("eeprom needs a subcommand: config or digest")
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(c.stdout, eepromUsage)
		return exitOK
	}
	sub, ok := findSubcommand("eeprom", args[0])
	if !ok {
		return c.eepromUsage(fmt.Sprintf("unknown eeprom subcommand %q (it has %s)", args[0], subcommandNames("eeprom")))
	}
	return sub.run(c, args[1:])
}

func (c *cli) eepromUsage(msg string) int {
	fmt.Fprintf(c.stderr, "nixpi: %s\n%s", msg, eepromUsage)
	return exitUsage
}

// parseEepromFlags parses flags; done is set when the caller should return
// code right away (help, or a usage error already printed).
func (c *cli) parseEepromFlags(flags *pflag.FlagSet, args []string) (image string, code int, done bool) {
	flags.SetOutput(io.Discard)
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(c.stdout, eepromUsage)
			return "", exitOK, true
		}
		return "", c.eepromUsage(fmt.Sprintf("eeprom %s: %v", flags.Name(), err)), true
	}
	if flags.NArg() != 1 {
		return "", c.eepromUsage(fmt.Sprintf("eeprom %s needs exactly one IMAGE, got %d arguments", flags.Name(), flags.NArg())), true
	}
	return flags.Arg(0), 0, false
}

// eepromConfigArgs are eeprom config's flags.
type eepromConfigArgs struct {
	config, out, digest, pubkey string
	sets                        []string
	force                       bool
}

func eepromConfigFlags(a *eepromConfigArgs) *pflag.FlagSet {
	flags := pflag.NewFlagSet("config", pflag.ContinueOnError)
	flags.StringVarP(&a.config, "config", "c", "", "bootloader config to put into the image")
	flags.StringVarP(&a.out, "out", "o", "", "output file (the new image, or the config when only reading)")
	flags.StringVarP(&a.digest, "digest", "d", "", "signed boot: bootconf.sig made by rpi-eeprom-digest -k for --config")
	flags.StringVarP(&a.pubkey, "pubkey", "p", "", "signed boot: the RSA-2048 public key (PEM) to store")
	flags.StringArrayVar(&a.sets, "set", nil, "KEY=VALUE to set in the config (repeatable)")
	flags.BoolVar(&a.force, "force", false, "replace --out if it exists")
	return flags
}

func (c *cli) eepromConfig(args []string) int {
	var a eepromConfigArgs
	flags := eepromConfigFlags(&a)
	imagePath, code, done := c.parseEepromFlags(flags, args)
	if done {
		return code
	}

	var settings []eeprom.Setting
	for _, kv := range a.sets {
		s, err := eeprom.ParseSetting(kv)
		if err != nil {
			return c.fail(usagef("eeprom config --set: %w", err))
		}
		if w := eeprom.UnknownKeyWarning(s.Key); w != "" {
			fmt.Fprintf(c.stderr, "nixpi: warning: eeprom config --set: %s\n", w)
		}
		settings = append(settings, s)
	}
	signing := a.digest != "" || a.pubkey != ""
	writing := a.config != "" || len(settings) > 0
	switch {
	case signing && a.config == "":
		return c.eepromUsage("eeprom config: --digest and --pubkey need --config, the config they sign")
	case signing && len(settings) > 0:
		return c.eepromUsage("eeprom config: --set would change the config --digest signs; sign the final config and pass it with --config")
	case writing && a.out == "":
		return c.eepromUsage("eeprom config: writing an image needs --out OUT")
	}

	inputs := []builder.Input{{What: "IMAGE", Path: imagePath}, {What: "the --config file", Path: a.config},
		{What: "the --digest file", Path: a.digest}, {What: "the --pubkey file", Path: a.pubkey}}
	if writing {
		// Refused before anything is read or changed.
		if err := builder.CheckOutput(a.out, a.force, inputs...); err != nil {
			return c.fail(fmt.Errorf("eeprom config: cannot write --out: %w", err))
		}
	}
	im, err := loadImage(imagePath)
	if err != nil {
		return c.fail(err)
	}
	if !writing {
		if a.out != "" {
			if same, _ := builder.SamePath(a.out, imagePath); same {
				return c.fail(fmt.Errorf("eeprom config: --out %q is IMAGE itself and would be replaced by its config: to change the image, pass --config or --set too", a.out))
			}
			return c.writeOut("config", a.out, im.Config(), a.force, builder.Input{What: "IMAGE", Path: imagePath})
		}
		// From the image: c.stdout escapes it (--out writes it as it is).
		if _, err := c.stdout.Write(im.Config()); err != nil {
			return c.fail(fmt.Errorf("eeprom config: %w", err))
		}
		return exitOK
	}

	cfg := im.Config()
	if a.config != "" {
		if cfg, err = inputfile.Read(a.config, "a bootloader config", maxEepromFile); err != nil {
			return c.fail(fmt.Errorf("eeprom config: %w", err))
		}
	}
	if cfg, err = eeprom.SetKeys(cfg, settings...); err != nil {
		return c.fail(fmt.Errorf("eeprom config: %w", err))
	}
	if err := im.SetConfig(cfg); err != nil {
		return c.fail(fmt.Errorf("eeprom config: %q: %w", imagePath, err))
	}
	if a.digest != "" {
		sig, err := inputfile.Read(a.digest, "a bootconf.sig", maxEepromFile)
		if err != nil {
			return c.fail(fmt.Errorf("eeprom config: %w", err))
		}
		if err := eeprom.CheckSig(sig, cfg); err != nil {
			return c.fail(fmt.Errorf("eeprom config: --digest %q is not for --config %q: %w; sign the config you pass (rpi-eeprom-digest -k KEY -i %s -o SIG), or pass the config it signs", a.digest, a.config, err, a.config))
		}
		if err := im.SetFile(eeprom.BootconfSig, sig); err != nil {
			return c.fail(fmt.Errorf("eeprom config: %q: %w", imagePath, err))
		}
	}
	if a.pubkey != "" {
		pem, err := inputfile.Read(a.pubkey, "a PEM public key", maxEepromFile)
		if err != nil {
			return c.fail(fmt.Errorf("eeprom config: %w", err))
		}
		key, err := eeprom.PublicKeyBin(pem)
		if err != nil {
			return c.fail(fmt.Errorf("eeprom config: %q: %w", a.pubkey, err))
		}
		if err := im.SetFile(eeprom.PubkeyBin, key); err != nil {
			return c.fail(fmt.Errorf("eeprom config: %q: %w", imagePath, err))
		}
	}
	// Read the result back before it leaves this process.
	result := im.Bytes()
	back, err := eeprom.Parse(result)
	if err != nil || string(back.Config()) != string(cfg) {
		return c.fail(fmt.Errorf("eeprom config: the new image does not read back as written (%v); nothing written", err))
	}
	return c.writeOut("config", a.out, result, a.force, inputs...)
}

// eepromDigestArgs are eeprom digest's flags.
type eepromDigestArgs struct {
	out, timestamp string
	force          bool
}

func eepromDigestFlags(a *eepromDigestArgs) *pflag.FlagSet {
	flags := pflag.NewFlagSet("digest", pflag.ContinueOnError)
	flags.StringVarP(&a.out, "out", "o", "", "the .sig file to write (pieeprom.sig)")
	flags.StringVar(&a.timestamp, "timestamp", "", "update timestamp, Unix seconds (default SOURCE_DATE_EPOCH, else now)")
	flags.BoolVar(&a.force, "force", false, "replace --out if it exists")
	return flags
}

func (c *cli) eepromDigest(args []string) int {
	var a eepromDigestArgs
	flags := eepromDigestFlags(&a)
	imagePath, code, done := c.parseEepromFlags(flags, args)
	if done {
		return code
	}
	if a.out == "" {
		return c.eepromUsage("eeprom digest needs --out SIG")
	}
	ts := time.Now().Unix()
	if a.timestamp != "" {
		n, err := strconv.ParseInt(a.timestamp, 10, 64)
		if err != nil || n < 0 {
			return c.fail(usagef("eeprom digest: --timestamp %q is not a number of seconds since 1970", a.timestamp))
		}
		ts = n
	} else if env := c.getenv("SOURCE_DATE_EPOCH"); env != "" {
		n, err := strconv.ParseInt(env, 10, 64)
		if err != nil || n < 0 {
			return c.fail(fmt.Errorf("eeprom digest: SOURCE_DATE_EPOCH=%q is not a number of seconds since 1970: fix or unset it", env))
		}
		ts = n
	}
	im, err := loadImage(imagePath)
	if err != nil {
		return c.fail(err)
	}
	return c.writeOut("digest", a.out, eeprom.Digest(im.Bytes(), ts), a.force, builder.Input{What: "IMAGE", Path: imagePath})
}

// maxEepromFile bounds the small files eeprom config takes (a config, a
// signature, a key): an EEPROM file holds at most eeprom.MaxFileSize bytes,
// and the bound leaves room for SetConfig to say how much too large one is.
const maxEepromFile = 64 << 10

func loadImage(path string) (*eeprom.Image, error) {
	data, err := inputfile.Read(path, "a bootloader EEPROM image (a Pi 4's is 512 KiB)", eeprom.MaxImageSize)
	if err != nil {
		return nil, fmt.Errorf("eeprom: %w", err)
	}
	im, err := eeprom.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("eeprom: %q: %w", path, err)
	}
	return im, nil
}

// writeOut writes path by build's rules for OUT (builder.CheckOutput,
// builder.WriteFile): never an input, an existing file only with force,
// atomically.
func (c *cli) writeOut(sub, path string, data []byte, force bool, inputs ...builder.Input) int {
	if err := builder.CheckOutput(path, force, inputs...); err != nil {
		return c.fail(fmt.Errorf("eeprom %s: cannot write --out: %w", sub, err))
	}
	if err := builder.WriteFile(path, data, force); err != nil {
		return c.fail(fmt.Errorf("eeprom %s: write %q: %w", sub, path, err))
	}
	return exitOK
}
