package qemu

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/disk"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/nixos"
	"github.com/nixpi/nixpi/firstboot/system"
)

// Options configures an end-to-end run.
type Options struct {
	// Base is the base image; empty builds (or reuses) the cached
	// Debian-made one in CacheDir.
	Base     string
	CacheDir string
	// Mirror is the Debian mirror the base image is built from (default:
	// deb.debian.org).
	Mirror string
	// Bootloader is a directory with Pi 4 bootloader images and
	// recovery.bin (BaseRecipe.WithBootloader) for the default base, where
	// the eeprom step finds them. Empty: the base has none, and the eeprom
	// step fails saying so.
	Bootloader string
	// Config is the install config written to the card.
	Config string
	// StandIn is the stand-in nixpkgs' source tree
	// (testdata/e2e/standin-nixpkgs). When set, the harness serves it and an
	// empty binary cache to the guest, and writes the run's config with the
	// stand-in's pins in [nixos]: the device steps fetch and build with the
	// real Nix in the guest, from this instead of nixpkgs.
	StandIn string
	// Dir is the work directory: card copies, SSDs, console logs.
	Dir string
	// DeviceBinary is passed to builder.Build (nil: the embedded binaries).
	DeviceBinary func(goarch string) ([]byte, error)
	Log          func(format string, args ...any)
	// CommandLog receives every host command the harness runs (quoted argv).
	CommandLog func(line string)
	// MemoryMiB is the guest's memory; 0 means 2048 (a 2 GiB Pi 4).
	MemoryMiB int
}

// E2E is a prepared run: a built card, and the harness to boot it.
type E2E struct {
	Harness
	Inspector *Inspector
	Config    *config.Config
	Card      string
	// StandIn and Server are the served stand-in nixpkgs (nil without
	// Options.StandIn).
	StandIn *StandIn
	Server  *StandInServer
	// Timings are the phases run so far and how long each took.
	Timings []Timing
	// Bootloader are the bootloader files the default base carries
	// (BaseRecipe.Bootloader), which the hand-over checks compare with.
	Bootloader []BaseFile
	// base is the base image the card was built from, and deviceBinary
	// Options.DeviceBinary: what a scenario with its own config builds
	// its card from.
	base         string
	deviceBinary func(goarch string) ([]byte, error)
	// Bystander: the uninterrupted scenario attaches a third USB disk with
	// data beside the card and the SSD, which must stay byte-identical (the
	// config must pick the SSD by identity, not "auto").
	Bystander bool
}

// Close stops the stand-in server.
func (e *E2E) Close() {
	if e != nil && e.Server != nil {
		e.Server.Close()
	}
}

// Timing is one phase's duration.
type Timing struct {
	Phase    string
	Duration time.Duration
	Err      error
}

// Phase runs fn, logging and recording its duration.
func (e *E2E) Phase(name string, fn func() error) error {
	start := time.Now()
	err := phase(e.logf, name, fn)
	e.Timings = append(e.Timings, Timing{Phase: name, Duration: time.Since(start), Err: err})
	return err
}

// Summary renders the timings as a table.
func (e *E2E) Summary() string {
	var b strings.Builder
	var total time.Duration
	for _, t := range e.Timings {
		status := "ok"
		if t.Err != nil {
			status = "FAILED"
		}
		fmt.Fprintf(&b, "  %-32s %9s  %s\n", t.Phase, t.Duration.Round(time.Second), status)
		total += t.Duration
	}
	fmt.Fprintf(&b, "  %-32s %9s\n", "total", total.Round(time.Second))
	return b.String()
}

// Prepare checks the host, gets the base image, and builds the card.
func Prepare(ctx context.Context, opts Options) (*E2E, error) {
	logf := func(format string, args ...any) {
		if opts.Log != nil {
			opts.Log(format, args...)
		}
	}
	runner := system.ExecRunner{Log: opts.CommandLog}
	tools := DefaultTools()
	if err := Check(tools.QemuSystem, tools.Mcopy, tools.Mtype, tools.Sgdisk, tools.Sfdisk, tools.Blkid, tools.Btrfs, tools.FsckFAT, tools.Losetup, tools.Mount); err != nil {
		return nil, err
	}
	cfg, err := config.Load(opts.Config)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	e := &E2E{
		Harness: Harness{
			Dir: opts.Dir, Run: runner, Tools: tools, Log: logf,
			// One boot installs NixOS: the Nix steps under emulation take many
			// minutes. The SSD's stand-in NixOS is up in about a minute.
			BootTimeout:    25 * time.Minute,
			SSDBootTimeout: 10 * time.Minute,
			// A power cut, the service's boots, a trial boot of the SSD, a
			// USB boot of it, and room for a failed trial.
			MaxBoots:  8,
			SSDSize:   16 << 30,
			SSDSerial: "NIXPIE2ESSD0001",
			MemoryMiB: cmp.Or(opts.MemoryMiB, 2048),
			CPUs:      2,
		},
		Inspector: &Inspector{Run: runner, Tools: tools, TempDir: opts.Dir},
		Config:    cfg,
		Card:      filepath.Join(opts.Dir, "card.img"),
	}
	base := opts.Base
	if base == "" {
		recipe := DefaultBaseRecipe()
		if opts.Mirror != "" {
			recipe.Mirror = opts.Mirror
		}
		if opts.Bootloader != "" {
			var err error
			if recipe, err = recipe.WithBootloader(opts.Bootloader); err != nil {
				return e, err
			}
			e.Bootloader = recipe.Bootloader
		}
		b := &BaseBuilder{Recipe: recipe, CacheDir: opts.CacheDir, Run: runner, Tools: tools, Log: logf}
		err := e.Phase("base image", func() error {
			var err error
			base, _, err = b.Ensure(ctx)
			return err
		})
		if err != nil {
			return e, err
		}
	}
	if opts.StandIn != "" {
		err := e.Phase("stand-in nixpkgs", func() error { return e.serveStandIn(ctx, opts, base) })
		if err != nil {
			return e, err
		}
		opts.Config = filepath.Join(opts.Dir, "nixpi.toml")
		if e.Config, err = config.Load(opts.Config); err != nil {
			return e, err
		}
	}
	e.base, e.deviceBinary = base, opts.DeviceBinary
	if e.EEPROM, err = e.Inspector.BaseEEPROM(ctx, base); err != nil {
		return e, err
	}
	baseCard, err := OpenCard(base, runner, tools)
	if err != nil {
		return e, err
	}
	baseCmdline, err := baseCard.ReadFile(ctx, "cmdline.txt")
	if err != nil {
		return e, err
	}
	e.BaseCmdline = string(baseCmdline)
	os.Remove(e.Card)
	os.Remove(e.Card + ".sha256")
	err = e.Phase("nixpi build", func() error {
		res, err := builder.Build(ctx, builder.Options{
			Base: base, Config: opts.Config, Out: e.Card, DeviceBinary: opts.DeviceBinary,
			Log: func(msg string) { logf("  %s", msg) },
		})
		if err != nil {
			return err
		}
		e.BootDir = res.Manifest.Base.BootDir
		return nil
	})
	if err != nil {
		return e, err
	}
	return e, nil
}

// StandInKey is the stand-in binary cache's public key: any key of the
// right form, as the cache serves nothing to sign.
const StandInKey = "stand-in-cache-1:c3RhbmQtaW4gY2FjaGUga2V5LCBzaWducyBub3RoaW4="

// serveStandIn stages the stand-in nixpkgs with the base image's arm64
// busybox and, when the base has one, its Debian kernel (then the installed
// system boots), serves it, routes the VMs' network to the server, and
// writes the run's config: the given one with the stand-in's pins.
func (e *E2E) serveStandIn(ctx context.Context, opts Options, base string) error {
	if err := Check(e.Tools.NixHash, e.Tools.Busybox); err != nil {
		return err
	}
	boot := Bootstrap{Busybox: filepath.Join(opts.Dir, "busybox-arm64")}
	if err := e.Inspector.CopyRootFile(ctx, base, "/usr/bin/busybox", boot.Busybox); err != nil {
		return fmt.Errorf("the base image's busybox (busybox-static): %w", err)
	}
	k, err := e.Inspector.CopyKernel(ctx, base, filepath.Join(opts.Dir, "standin-kernel"))
	if err != nil {
		// A base without a Debian kernel (Raspberry Pi OS keeps its kernel
		// on the FAT only) installs a system that cannot boot here.
		e.logf("stand-in nixpkgs: no kernel from the base image (%v): the installed system will not be booted", err)
	} else {
		boot.Kernel = k.Dir
		e.logf("stand-in nixpkgs: kernel %s from the base image with %d modules", k.Version, len(k.Modules))
	}
	s, err := StageStandIn(ctx, e.Run, e.Tools.NixHash, opts.StandIn, boot, filepath.Join(opts.Dir, "standin-nixpkgs"))
	if err != nil {
		return err
	}
	e.SSDBoots = s.Bootable
	srv, err := ServeStandIn(s)
	if err != nil {
		return err
	}
	e.StandIn, e.Server = s, srv
	e.GuestForward = GuestForward(e.Tools.Busybox, srv.Port())
	e.logf("stand-in nixpkgs %s (NAR hash %s, %d KiB tarball) served on 127.0.0.1:%d as %s, empty cache %s",
		s.Rev, s.NARHash, len(s.Tarball)>>10, srv.Port(), srv.TarballURL(), srv.CacheURL())
	tmpl, err := os.ReadFile(opts.Config)
	if err != nil {
		return err
	}
	text, err := WithStandInPins(string(tmpl), srv, s)
	if err != nil {
		return fmt.Errorf("%s: %w", opts.Config, err)
	}
	return os.WriteFile(filepath.Join(opts.Dir, "nixpi.toml"), []byte(text), 0o644)
}

// WithStandInPins puts the stand-in's pins and cache into a config's
// [nixos] table, in place of any the config sets itself (the example config
// names cache.nixos.org, which the guest cannot reach). A config without a
// [nixos] table (every key of it has a default) gets one at its end.
func WithStandInPins(toml string, srv *StandInServer, s *StandIn) (string, error) {
	pins := fmt.Sprintf("# Written by the e2e harness: the stand-in nixpkgs (test data) and its empty cache.\n"+
		"nixpkgs_url = %q\nnixpkgs_rev = %q\nnixpkgs_sha256 = %q\nsubstituters = [%q]\ntrusted_public_keys = [%q]\n",
		srv.TarballURL(), s.Rev, s.NARHash, srv.CacheURL(), StandInKey)
	replaced := map[string]bool{"nixpkgs_url": true, "nixpkgs_rev": true, "nixpkgs_sha256": true, "substituters": true, "trusted_public_keys": true}
	var out strings.Builder
	inNixOS, found, inArray := false, false, false
	for _, line := range strings.SplitAfter(toml, "\n") {
		trimmed := strings.TrimSpace(line)
		if name, ok := tableHeader(trimmed); ok && !inArray {
			inNixOS = name == "nixos"
			out.WriteString(line)
			if inNixOS {
				if found {
					return "", fmt.Errorf("two [nixos] tables (the config is not valid TOML; run nixpi config check)")
				}
				found = true
				if !strings.HasSuffix(line, "\n") {
					out.WriteString("\n")
				}
				out.WriteString(pins)
			}
			continue
		}
		if inArray {
			// The rest of a replaced multi-line array.
			inArray = !strings.Contains(trimmed, "]")
			continue
		}
		key, value, ok := strings.Cut(trimmed, "=")
		if inNixOS && ok && replaced[strings.TrimSpace(key)] {
			value = strings.TrimSpace(value)
			inArray = strings.HasPrefix(value, "[") && !strings.Contains(value, "]")
			out.WriteString("# (replaced by the e2e harness) " + trimmed + "\n")
			continue
		}
		out.WriteString(line)
	}
	if !found {
		text := out.String()
		if text != "" && !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		return text + "\n[nixos]\n" + pins, nil
	}
	return out.String(), nil
}

// tableHeader is the name of the table a TOML line opens ("[ nixos ] #
// pins" opens nixos); an array of tables ("[[users]]") is named with its
// brackets, so it is never nixos but still ends the table before it.
func tableHeader(line string) (name string, ok bool) {
	if !strings.HasPrefix(line, "[") {
		return "", false
	}
	if strings.HasPrefix(line, "[[") {
		return line, true
	}
	header, _, closed := strings.Cut(line[1:], "]")
	if !closed {
		return "", false
	}
	return strings.TrimSpace(header), true
}

// BlankSSD makes a new, empty SSD.
func (e *E2E) BlankSSD(path string) error { return NewBlankDisk(path, e.SSDSize) }

// planOf is the layout the disk steps planned for cfg on this run's SSD:
// disk.NewPlan with the journal's record of the disk and of the memory, as
// the partition and format steps call it. With swap = "ram" the recorded
// memory is checked against the guest's first: a wrong reading would plan
// the wrong swap on both sides.
func (e *E2E) planOf(in *Install, cfg *config.Config, sectorSize int64) (*disk.Plan, error) {
	if in.Journal == nil {
		return nil, fmt.Errorf("%s: no journal to read the target disk and the memory size from", in.Name)
	}
	state, err := in.Journal.CurrentState()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in.Name, err)
	}
	if state.Target == nil {
		return nil, fmt.Errorf("%s: the journal records no target disk", in.Name)
	}
	if vm := int64(e.MemoryMiB) << 20; cfg.Layout.SwapSize.RAM && (state.RAMBytes <= vm*3/4 || state.RAMBytes > vm) {
		return nil, fmt.Errorf("%s: the service found %d bytes of memory on a guest with %d MiB", in.Name, state.RAMBytes, e.MemoryMiB)
	}
	plan, err := disk.NewPlan(cfg.Layout, state.RAMBytes, disk.RecordedIdentity(state.Target), sectorSize)
	if err != nil {
		return nil, fmt.Errorf("%s: plan the layout as the disk steps do: %w", in.Name, err)
	}
	return plan, nil
}

// Reference is what the uninterrupted run left on its SSD, for the
// interrupted runs to end in.
type Reference struct {
	Disk  *DiskSpec
	NixOS *InstalledSpec // nil without the stand-in
	// Trial is the Pi as it was when the card asked for the trial boot:
	// where the scenarios of a trial that fails start.
	Trial *Snapshot
}

// checkLayout checks a finished run's SSD against the layout the disk
// steps plan for cfg.
func (e *E2E) checkLayout(ctx context.Context, in *Install, cfg *config.Config) (*DiskSpec, *disk.Plan, Problems, error) {
	spec, err := e.Inspector.Inspect(ctx, in.SSD)
	if err != nil {
		return nil, nil, nil, err
	}
	plan, err := e.planOf(in, cfg, spec.SectorSize)
	if err != nil {
		return spec, nil, nil, err
	}
	p := CheckMounts(in, plan)
	return spec, plan, append(p, CheckSSD(spec, plan)...), nil
}

// configSecrets are the config's secret values, which no log, journal or
// store file may contain.
func configSecrets(cfg *config.Config) []string {
	var s []string
	for _, u := range cfg.Users {
		if h := u.PasswordHash.Reveal(); h != "" {
			s = append(s, h)
		}
	}
	if cfg.WLAN != nil && cfg.WLAN.PSK.Reveal() != "" {
		s = append(s, cfg.WLAN.PSK.Reveal())
	}
	return s
}

// checkNixOS checks the NixOS a finished run installed (with the stand-in
// nixpkgs): the SSD mounted read-only as the system sees it, the journal,
// install.log and consoles free of secrets, and the guest's use of the
// stand-in server.
func (e *E2E) checkNixOS(ctx context.Context, in *Install, cfg *config.Config, spec *DiskSpec, plan *disk.Plan) (*InstalledSpec, Problems, error) {
	if e.StandIn == nil {
		return nil, nil, nil
	}
	var p Problems
	state, err := in.Journal.CurrentState()
	if err != nil {
		p.addf("%s: %v", in.Name, err)
	}
	if state.SystemPath == "" {
		p.addf("%s: the journal records no built system (state system_path)", in.Name)
	}
	want := NixOSWant{Hostname: cfg.System.Hostname, SystemPath: state.SystemPath, NixpkgsRev: e.StandIn.Rev,
		Channel: nixos.ChannelURL(cfg.NixOS.Release), Firmware: StandInFirmware, Secrets: configSecrets(cfg), NixInstantiate: e.Tools.NixInstantiate, Run: e.Run}
	var installed *InstalledSpec
	err = e.Inspector.WithInstalledSSD(ctx, in.SSD, spec, plan, func(root, boot string) error {
		for _, s := range CheckNixOSRoot(ctx, root, boot, want) {
			p.addf("%s: %s", in.Name, s)
		}
		var err error
		installed, err = DescribeInstalled(root, boot)
		return err
	})
	if err != nil {
		return nil, p, fmt.Errorf("%s: inspect the installed SSD: %w", in.Name, err)
	}
	card, err := OpenCard(in.Card, e.Run, e.Tools)
	if err != nil {
		return installed, p, err
	}
	journalText, err := card.ReadFile(ctx, cardpath.Journal)
	if err != nil {
		return installed, p, err
	}
	consoles, err := in.Consoles()
	if err != nil {
		return installed, p, err
	}
	for _, s := range CheckNoSecrets(map[string]string{"the journal": string(journalText), "install.log": in.InstallLog, "the consoles": consoles}, want.Secrets) {
		p.addf("%s: %s", in.Name, s)
	}
	p = append(p, CheckNixOSBoots(in, state.SystemPath, e.SSDBoots)...)
	requests := strings.Join(e.Server.Requests(), "\n")
	for _, r := range []string{"GET " + StandInCachePath + "/nix-cache-info 200", "GET " + strings.TrimPrefix(e.Server.TarballURL(), "http://"+GuestServerAddr) + " 200"} {
		if !strings.Contains(requests, r) {
			p.addf("%s: the guest never asked the stand-in server for %q; it served:\n%s", in.Name, r, requests)
		}
	}
	return installed, p, nil
}

// Uninterrupted runs the install without interruption and checks the SSD
// against the config.
//
// After the hand-over it checks the card and boots a copy of it brought
// back with restore-card; with Bystander it checks the third disk.
func (e *E2E) Uninterrupted(ctx context.Context, hookedCard string) (*Reference, Problems, error) {
	var in *Install
	var bystanders []USBDisk
	var bystanderSum string
	if e.Bystander {
		d := USBDisk{Path: filepath.Join(e.Dir, "bystander.img"), Serial: "NIXPIE2EOTHER01"}
		var err error
		if bystanderSum, err = e.NewBystander(ctx, d.Path); err != nil {
			return nil, nil, fmt.Errorf("the bystander disk: %w", err)
		}
		bystanders = append(bystanders, d)
	}
	err := e.Phase("scenario uninterrupted", func() error {
		var err error
		in, err = e.RunInstall(ctx, "uninterrupted", hookedCard, InstallOptions{MakeSSD: e.BlankSSD, Bystanders: bystanders,
			SnapshotDir: filepath.Join(e.Dir, "uninterrupted-trial")})
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	p := e.CheckInstall(in, nil)
	if in.Journal != nil {
		var steps strings.Builder
		for _, en := range in.Journal.Entries {
			steps.WriteString("  " + journal.FormatEntry(en) + "\n")
		}
		e.logf("uninterrupted: the card's journal, step by step:\n%s", steps.String())
	}
	p = append(p, e.checkHandOver(ctx, in, hookedCard, e.Config)...)
	for _, d := range bystanders {
		if sum, err := SHA256File(d.Path); err != nil || sum != bystanderSum {
			p.addf("uninterrupted: the third USB disk (serial %s) changed: sha256 %s, was %s (%v)", d.Serial, sum, bystanderSum, err)
		}
	}
	if in.HandedOver {
		err := e.Phase("restored card boot", func() error {
			rp, err := e.RestoreBoot(ctx, in, hookedCard)
			p = append(p, rp...)
			return err
		})
		if err != nil {
			return nil, p, err
		}
	}
	spec, plan, layout, err := e.checkLayout(ctx, in, e.Config)
	p = append(p, layout...)
	if err != nil {
		return nil, p, err
	}
	e.logf("uninterrupted: SSD:\n%s", spec)
	installed, nixos, err := e.checkNixOS(ctx, in, e.Config, spec, plan)
	p = append(p, nixos...)
	if err != nil {
		return nil, p, err
	}
	if installed != nil {
		e.logf("uninterrupted: installed:\n%s", installed)
	}
	for _, b := range in.Boots {
		if b.Source != SourceCard {
			e.logf("uninterrupted: boot %d from %s (%s), %s after %s:\n%s", b.N, b.Source, b.Via, b.End, b.Duration.Round(100*time.Millisecond), standInLines(b))
		}
	}
	return &Reference{Disk: spec, NixOS: installed, Trial: in.Snapshot}, p, nil
}

// TrialNotConfirmed starts from the Pi as the card asked for the trial
// boot, breaks the trial (break_ changes the SSD copy, or cut cuts the
// power during the trial boot), and checks what a Pi owner must find: the
// Pi came back to the card by itself, the service stopped saying that the
// SSD did not boot NixOS, and nothing of the card was retired or scrubbed.
func (e *E2E) TrialNotConfirmed(ctx context.Context, name string, from *Snapshot, break_ func(ssd string) error, cut *Cut) (Problems, error) {
	if from == nil {
		return nil, fmt.Errorf("%s: the uninterrupted run took no snapshot at the trial boot", name)
	}
	dir := filepath.Join(e.Dir, name+"-from")
	snap, err := takeSnapshot(&Pi{Card: from.Card, SSD: from.SSD, EEPROM: from.EEPROM, Tryboot: from.Tryboot}, dir, from.After)
	if err != nil {
		return nil, err
	}
	if break_ != nil {
		if err := break_(snap.SSD); err != nil {
			return nil, fmt.Errorf("%s: break the SSD: %w", name, err)
		}
	}
	var in *Install
	err = e.Phase("scenario "+name, func() error {
		var err error
		opts := InstallOptions{From: snap}
		if cut != nil {
			opts.Cuts = []*Cut{cut}
		}
		in, err = e.RunInstall(ctx, name, "", opts)
		return err
	})
	if err != nil {
		return nil, err
	}
	return e.CheckTrialNotConfirmed(ctx, in), nil
}

// CheckTrialNotConfirmed checks a run whose trial boot never confirmed.
func (e *E2E) CheckTrialNotConfirmed(ctx context.Context, in *Install) Problems {
	var p Problems
	if !in.Failed {
		p.addf("%s: the service did not stop after a trial boot that never confirmed", in.Name)
	}
	if in.NixOSFrom(SourceUSB) {
		p.addf("%s: NixOS came up from USB: the card was retired without a confirmation", in.Name)
	}
	if cb := in.CardBoots(); len(cb) == 0 || cb[len(cb)-1].N != len(in.Boots) {
		p.addf("%s: the Pi did not come back to the card's Raspberry Pi OS after the trial", in.Name)
	}
	if j := in.Journal; j != nil && len(j.Entries) > 0 {
		last := j.Entries[len(j.Entries)-1]
		if last.Step != "trial" || last.Event != journal.Fail || !strings.Contains(last.Msg, "the SSD did not boot NixOS") || !strings.Contains(last.Msg, "nothing was retired") {
			p.addf("%s: the journal ends with %s %s %q, want the trial's failure saying the SSD did not boot NixOS", in.Name, last.Step, last.Event, last.Msg)
		}
		if ho := journal.LastHandOver(j); ho == nil || ho.Confirmed != nil || !strings.Contains(ho.ConfirmLine(), "not confirmed") {
			p.addf("%s: the hand-over reads %+v", in.Name, ho)
		}
	} else {
		p.addf("%s: no journal", in.Name)
	}
	card, err := OpenCard(in.Card, e.Run, e.Tools)
	if err != nil {
		p.addf("%s: %v", in.Name, err)
		return p
	}
	if _, err := card.ReadFile(ctx, pi4Firmware); err != nil {
		p.addf("%s: %s is not at the card's root: the card was retired though NixOS never confirmed (%v)", in.Name, pi4Firmware, err)
	}
	if _, err := card.ReadFile(ctx, cardpath.RetiredManifest); err == nil {
		p.addf("%s: the card has %s: something was retired", in.Name, cardpath.RetiredManifest)
	}
	if toml, err := card.ReadFile(ctx, cardpath.Config); err != nil || (len(configSecrets(e.Config)) > 0 && len(CheckNoSecrets(map[string]string{"c": string(toml)}, configSecrets(e.Config))) == 0) {
		p.addf("%s: the card's config lost its secrets before NixOS confirmed: a retry could not install with them (%v)", in.Name, err)
	}
	return p
}

// BreakExtlinux renames the SSD's extlinux.conf: U-Boot then finds nothing
// to boot, as with an enclosure U-Boot cannot read.
func (e *E2E) BreakExtlinux(ctx context.Context) func(ssd string) error {
	return func(ssd string) error {
		fat, err := OpenSSDBoot(ssd, e.Run, e.Tools)
		if err != nil {
			return err
		}
		return fat.Rename(ctx, "extlinux/extlinux.conf", "extlinux/extlinux.conf.broken")
	}
}

// checkHandOver checks the card after the hand-over when the config's
// boot order retires it (tries the SD card before USB).
func (e *E2E) checkHandOver(ctx context.Context, in *Install, hookedCard string, cfg *config.Config) Problems {
	order := cfg.Boot.BootOrder
	if order == "" {
		order = config.Default().Boot.BootOrder
	}
	if !eeprom.SDBeforeUSB(order) {
		return nil
	}
	want := HandOverWant{BootOrder: order, Secrets: configSecrets(cfg), Address: e.GuestForward != ""}
	for _, f := range e.Bootloader {
		if f.Name == cardpath.Recovery {
			want.Recovery = f.Src
		} else {
			want.Image = f.Src
		}
	}
	return e.CheckHandOver(ctx, in, hookedCard, want)
}

// PowerCuts runs one install that loses power once in each cut's step, in
// turn (each boot resumes what the cut before left, and is cut again
// further on), and compares the SSD with the uninterrupted run's. One
// install for all the cuts: each full install with its hand-over costs
// about eight minutes under emulation.
func (e *E2E) PowerCuts(ctx context.Context, hookedCard string, cuts []*Cut, reference *Reference) (Problems, error) {
	steps := make([]string, len(cuts))
	for i, c := range cuts {
		steps[i] = c.Step
	}
	name := "power-cuts-" + strings.Join(steps, "-")
	var in *Install
	err := e.Phase("scenario "+name, func() error {
		var err error
		in, err = e.RunInstall(ctx, name, hookedCard, InstallOptions{MakeSSD: e.BlankSSD, Cuts: cuts})
		return err
	})
	if err != nil {
		return nil, err
	}
	p := e.CheckInstall(in, cuts)
	p = append(p, e.checkHandOver(ctx, in, hookedCard, e.Config)...)
	spec, plan, layout, err := e.checkLayout(ctx, in, e.Config)
	p = append(p, layout...)
	if err != nil {
		return p, err
	}
	installed, nixos, err := e.checkNixOS(ctx, in, e.Config, spec, plan)
	p = append(p, nixos...)
	if err != nil {
		return p, err
	}
	if reference != nil {
		p = append(p, CompareSpecs(name, spec, reference.Disk)...)
		if installed != nil && reference.NixOS != nil {
			p = append(p, CompareInstalled(name, installed, reference.NixOS)...)
		}
	}
	return p, nil
}

// OtherConfig installs with another config through the whole flow, to a
// confirmed NixOS booting from the SSD, and checks the SSD against what the
// disk steps plan for that config (e.g. an MBR with an ext4 root and no
// swap). configPath is the config as a user writes it: the harness adds
// the stand-in's pins, and the card is built with it by nixpi build.
//
// The run starts from a copy of the hooked card with the new build's
// config and manifest in place of its own (the hook boot is the same for
// every config, and costs minutes under emulation): what a person does who
// writes another nixpi.toml onto the card before the second boot.
func (e *E2E) OtherConfig(ctx context.Context, name, hookedCard, configPath string) (Problems, error) {
	if e.StandIn == nil {
		return nil, fmt.Errorf("%s: needs the stand-in nixpkgs (Options.StandIn)", name)
	}
	dir := filepath.Join(e.Dir, name+"-card")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	tmpl, err := os.ReadFile(configPath)
	if err != nil {
		return nil, err
	}
	text, err := WithStandInPins(string(tmpl), e.Server, e.StandIn)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", configPath, err)
	}
	cfgPath := filepath.Join(dir, "nixpi.toml")
	if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
		return nil, err
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	card := filepath.Join(dir, "card.img")
	err = e.Phase("nixpi build "+name, func() error {
		built := filepath.Join(dir, "built.img")
		defer os.Remove(built)
		defer os.Remove(built + ".sha256")
		if _, err := builder.Build(ctx, builder.Options{Base: e.base, Config: cfgPath, Out: built, DeviceBinary: e.deviceBinary,
			Log: func(msg string) { e.logf("  %s", msg) }}); err != nil {
			return err
		}
		if err := CopySparseFile(hookedCard, card); err != nil {
			return err
		}
		from, err := OpenCard(built, e.Run, e.Tools)
		if err != nil {
			return err
		}
		to, err := OpenCard(card, e.Run, e.Tools)
		if err != nil {
			return err
		}
		for _, f := range []string{cardpath.Config, cardpath.Manifest} {
			local := filepath.Join(dir, filepath.Base(f))
			if err := from.CopyOut(ctx, f, local); err != nil {
				return err
			}
			if err := to.CopyIn(ctx, local, f); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var in *Install
	err = e.Phase("scenario "+name, func() error {
		var err error
		in, err = e.RunInstall(ctx, name, card, InstallOptions{MakeSSD: e.BlankSSD})
		return err
	})
	if err != nil {
		return nil, err
	}
	p := e.CheckInstall(in, nil)
	p = append(p, e.checkHandOver(ctx, in, card, cfg)...)
	spec, plan, layout, err := e.checkLayout(ctx, in, cfg)
	p = append(p, layout...)
	if err != nil {
		return p, err
	}
	e.logf("%s: SSD:\n%s", name, spec)
	_, nixos, err := e.checkNixOS(ctx, in, cfg, spec, plan)
	p = append(p, nixos...)
	if err != nil {
		return p, err
	}
	if !in.NixOSFrom(SourceUSB) {
		p.addf("%s: NixOS never came up from the SSD as a USB boot after the hand-over (the stand-in needs the base image's kernel to boot: %v)", name, e.SSDBoots)
	}
	for _, b := range in.Boots {
		if b.Source != SourceCard {
			e.logf("%s: boot %d from %s (%s), %s after %s:\n%s", name, b.N, b.Source, b.Via, b.End, b.Duration.Round(100*time.Millisecond), standInLines(b))
		}
	}
	return p, nil
}

// Refusal attaches an SSD that carries an ext4 filesystem with data; the
// config does not allow wiping, so the service must refuse and leave it
// byte-identical.
func (e *E2E) Refusal(ctx context.Context, hookedCard string) (Problems, error) {
	if e.Config.Target.Wipe {
		return nil, fmt.Errorf("refusal scenario: the config allows wiping (target.wipe = true); use a config with wipe = false")
	}
	var before string
	makeSSD := func(path string) error {
		if err := e.BlankSSD(path); err != nil {
			return err
		}
		data := filepath.Join(e.Dir, "refusal-data")
		if err := os.MkdirAll(data, 0o755); err != nil {
			return err
		}
		defer os.RemoveAll(data)
		if err := os.WriteFile(filepath.Join(data, "photos.txt"), []byte("someone's data that must survive\n"), 0o644); err != nil {
			return err
		}
		if _, err := run(ctx, e.Run, e.Tools.MkfsExt4, "-q", "-F", "-L", "data", "-d", data, path); err != nil {
			return err
		}
		var err error
		before, err = SHA256File(path)
		return err
	}
	var in *Install
	err := e.Phase("scenario refusal", func() error {
		var err error
		in, err = e.RunInstall(ctx, "refusal", hookedCard, InstallOptions{MakeSSD: makeSSD})
		return err
	})
	if err != nil {
		return nil, err
	}
	after, err := SHA256File(in.SSD)
	if err != nil {
		return nil, err
	}
	return CheckRefusal(in, before, after, e.SSDSerial), nil
}

// BuildDeviceBinary cross-compiles cmd/nixpi-firstboot from the module at
// moduleDir for linux/goarch, for tests that must run the tree's code.
func BuildDeviceBinary(ctx context.Context, moduleDir, goarch, out string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-o", out, "./cmd/nixpi-firstboot")
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if goarch == "arm" {
		cmd.Env = append(cmd.Env, "GOARM=7")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build nixpi-firstboot for %s: %v: %s", goarch, err, out)
	}
	return os.ReadFile(out)
}
