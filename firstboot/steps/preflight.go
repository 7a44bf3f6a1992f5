package steps

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/network"
)

// Memory limits, decided from DESIGN.md §4 (evaluating NixOS takes 1.1–2 GiB
// and OOM kills are silent):
//   - below MinRAM the machine is not a Pi 4 with 1 GB or more: blocking;
//   - memory plus the configured swap below MinRAMPlusSwap: blocking, since
//     the evaluation would be killed; a 1 GB Pi passes with swap_size = "ram".
const (
	MinRAM         = 768 << 20
	MinRAMPlusSwap = 1536 << 20
)

// clockFloor is a date the clock must be past to be plausible; a Pi has no
// RTC and may start at the last saved time or at 1970.
var clockFloor = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Severity of a preflight finding.
type Severity int

const (
	OK Severity = iota
	Warning
	Blocking
)

func (s Severity) String() string {
	return [...]string{"ok", "warning", "BLOCKING"}[s]
}

// Finding is one preflight check's result.
type Finding struct {
	Check    string
	Severity Severity
	Msg      string
	Hint     string
}

// Report is what preflight found.
type Report struct {
	Model    string // device tree model, "" when not a device-tree machine
	IsPi     bool
	RAMBytes int64
	Arch     string // uname -m
	Findings []Finding
}

func (r *Report) add(check string, sev Severity, hint, format string, args ...any) {
	r.Findings = append(r.Findings, Finding{Check: check, Severity: sev, Msg: fmt.Sprintf(format, args...), Hint: hint})
}

// Blocking returns the blocking findings.
func (r *Report) Blocking() []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Severity == Blocking {
			out = append(out, f)
		}
	}
	return out
}

type preflightStep struct{}

// NewPreflight checks the machine read-only: Pi model, memory, power supply,
// bootloader, kernel architecture, clock and network.
func NewPreflight() engine.Step { return preflightStep{} }

func (preflightStep) Name() string    { return "preflight" }
func (preflightStep) Needs() []string { return nil }
func (preflightStep) Describe() string {
	return "checking the Pi (model, memory, power supply, bootloader, kernel, clock, network); changes nothing"
}

// Probe never reports done: the checks are cheap and the machine may have
// changed (another power supply, another SSD) since the last boot.
func (preflightStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	return false, "checks run on every boot", nil
}

func (preflightStep) Run(ctx context.Context, env *engine.Env) error {
	r := Check(ctx, env)
	for _, f := range r.Findings {
		env.Logf("%-8s %-10s %s", f.Severity, f.Check, f.Msg)
	}
	// The first reading sizes the swap partition; later boots keep it, since
	// MemTotal can move by a few KiB between kernels and the partition step
	// refuses a disk whose table no longer matches its plan.
	if r.RAMBytes > 0 && env.State.RAMBytes == 0 {
		env.State.RAMBytes = r.RAMBytes
	}
	blocking := r.Blocking()
	if len(blocking) == 0 {
		return nil
	}
	var msgs, hints []string
	for _, f := range blocking {
		msgs = append(msgs, f.Check+": "+f.Msg)
		if f.Hint != "" {
			hints = append(hints, f.Hint)
		}
	}
	return engine.WithHint(fmt.Errorf("preflight: %d blocking problem(s): %s", len(blocking), strings.Join(msgs, "; ")), strings.Join(hints, "; "))
}

// Check runs every preflight check. It only reads.
func Check(ctx context.Context, env *engine.Env) *Report {
	r := &Report{}
	checkModel(env, r)
	checkMemory(env, r)
	checkPower(ctx, env, r)
	checkBootloader(ctx, env, r)
	checkKernel(ctx, env, r)
	checkClock(env, r)
	checkNetwork(env, r)
	return r
}

func checkModel(env *engine.Env, r *Report) {
	data, err := os.ReadFile(env.Path("/proc/device-tree/model"))
	r.Model = strings.TrimSpace(strings.TrimRight(string(data), "\x00"))
	r.IsPi = err == nil && strings.HasPrefix(r.Model, "Raspberry Pi")
	switch {
	case !r.IsPi:
		model := r.Model
		if model == "" {
			model = "no device-tree model"
		}
		r.add("model", Warning, "", "not a Raspberry Pi (%s): Pi-specific checks are only warnings", model)
	case strings.HasPrefix(r.Model, "Raspberry Pi 4 "), strings.HasPrefix(r.Model, "Raspberry Pi 400 "),
		strings.HasPrefix(r.Model, "Raspberry Pi Compute Module 4"):
		r.add("model", OK, "", "%s", r.Model)
	default:
		r.add("model", Blocking, "use a Raspberry Pi 4, 400 or Compute Module 4",
			"%s is not supported: nixpi installs onto a Raspberry Pi 4, 400 or Compute Module 4 (it sets the Pi 4 EEPROM boot order)", r.Model)
	}
}

// memTotal reads MemTotal from /proc/meminfo in bytes. The disk steps use it
// for swap_size = "ram" when preflight has not run (--only).
func memTotal(env *engine.Env) (int64, error) {
	data, err := os.ReadFile(env.Path("/proc/meminfo"))
	if err != nil {
		return 0, fmt.Errorf("memory size: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || kb <= 0 {
				return 0, fmt.Errorf("memory size: bad MemTotal line %q in /proc/meminfo", sc.Text())
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("memory size: no MemTotal line in /proc/meminfo")
}

func mib(b int64) string { return fmt.Sprintf("%d MiB", b>>20) }

func checkMemory(env *engine.Env, r *Report) {
	ram, err := memTotal(env)
	if err != nil {
		r.add("memory", Blocking, "", "%v", err)
		return
	}
	r.RAMBytes = ram
	if ram < MinRAM {
		r.add("memory", Blocking, "use a Raspberry Pi 4 with 1 GB of memory or more",
			"%s of memory: NixOS needs a Pi with 1 GB or more", mib(ram))
		return
	}
	swap := config.Default().Layout.SwapSize
	if env.Config != nil {
		swap = env.Config.Layout.SwapSize
	}
	total := ram + int64(swap.Resolve(ram))
	if total < MinRAMPlusSwap {
		r.add("memory", Blocking, `set layout.swap_size = "ram" (or larger) in nixpi/nixpi.toml`,
			"%s of memory plus %s of swap is below %s: evaluating NixOS would run out of memory", mib(ram), swap, mib(MinRAMPlusSwap))
		return
	}
	r.add("memory", OK, "", "%s of memory, swap %s", mib(ram), swap)
}

// piSeverity downgrades a Pi-specific problem to a warning off a Pi.
func piSeverity(r *Report, sev Severity) Severity {
	if !r.IsPi && sev == Blocking {
		return Warning
	}
	return sev
}

// Bits of "vcgencmd get_throttled".
const (
	underVoltageNow    = 1 << 0
	freqCappedNow      = 1 << 1
	throttledNow       = 1 << 2
	softTempLimitNow   = 1 << 3
	underVoltageSince  = 1 << 16
	throttledSinceBoot = 1 << 18
)

func checkPower(ctx context.Context, env *engine.Env, r *Report) {
	if !env.Exists(env.Tools.Vcgencmd) {
		if r.IsPi {
			r.add("power", Warning, "", "vcgencmd not found at %s: cannot check for under-voltage", env.Tools.Vcgencmd)
		}
		return
	}
	out, err := env.Run.Output(ctx, env.Tools.Vcgencmd, "get_throttled")
	if err != nil {
		r.add("power", Warning, "", "cannot check for under-voltage: %v", err)
		return
	}
	s := strings.TrimSpace(string(out))
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "throttled=0x"), 16, 32)
	if !strings.HasPrefix(s, "throttled=0x") || err != nil {
		r.add("power", Warning, "", "unexpected vcgencmd get_throttled output %q", s)
		return
	}
	psu := "use the official 5.1 V 3 A power supply, or a powered USB hub for the SSD"
	switch {
	case v&underVoltageNow != 0:
		// A USB SSD on an under-powered Pi 4 drops off the bus mid-write.
		r.add("power", piSeverity(r, Blocking), psu, "under-voltage right now (throttled=0x%x): writing to the SSD would not be safe", v)
	case v&underVoltageSince != 0:
		r.add("power", Warning, psu, "under-voltage occurred since boot (throttled=0x%x)", v)
	case v&(freqCappedNow|throttledNow|softTempLimitNow|throttledSinceBoot) != 0:
		r.add("power", Warning, "", "the Pi is or was throttled (throttled=0x%x): too hot? the install will be slower", v)
	default:
		r.add("power", OK, "", "no under-voltage or throttling (throttled=0x%x)", v)
	}
}

func checkBootloader(ctx context.Context, env *engine.Env, r *Report) {
	if !r.IsPi || !env.Exists(env.Tools.Vcgencmd) {
		return
	}
	out, err := env.Run.Output(ctx, env.Tools.Vcgencmd, "bootloader_version")
	if err != nil {
		r.add("bootloader", Warning, "", "cannot read the bootloader version: %v", err)
		return
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if first == "" {
		r.add("bootloader", Warning, "", "vcgencmd bootloader_version printed nothing")
		return
	}
	r.add("bootloader", OK, "", "EEPROM bootloader %s", first)
}

// kernelArch runs uname -m.
func kernelArch(ctx context.Context, env *engine.Env) (string, error) {
	out, err := env.Run.Output(ctx, env.Tools.Uname, "-m")
	if err != nil {
		return "", fmt.Errorf("kernel architecture: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func checkKernel(ctx context.Context, env *engine.Env, r *Report) {
	arch, err := kernelArch(ctx, env)
	if err != nil {
		r.add("kernel", Blocking, "", "%v", err)
		return
	}
	r.Arch = arch
	switch arch {
	case "aarch64":
		r.add("kernel", OK, "", "64-bit kernel (aarch64)")
	case "armv7l", "armv8l", "armv6l":
		r.add("kernel", OK, "", "32-bit kernel (%s): the arm64 step switches to the 64-bit kernel and reboots", arch)
	default:
		r.add("kernel", Blocking, "run nixpi-firstboot on the Raspberry Pi", "kernel architecture %q is not ARM", arch)
	}
}

func checkClock(env *engine.Env, r *Report) {
	now := env.Clock().UTC()
	if now.Before(clockFloor) {
		r.add("clock", Warning, "", "the clock says %s (the Pi has no RTC): downloads wait for network time", now.Format(time.RFC3339))
		return
	}
	r.add("clock", OK, "", "%s", now.Format(time.RFC3339))
}

func checkNetwork(env *engine.Env, r *Report) {
	st := network.Check(env)
	if st.Up() {
		r.add("network", OK, "", "%s", st)
		return
	}
	// Not a problem yet: only steps that download wait for the network.
	r.add("network", OK, "", "not up yet (%s); steps that download will wait for it", st)
}
