// Command bench measures how long nixpi takes to turn an xz-compressed
// Raspberry Pi OS-like base image into an image on disk, against the floor
// set by `xz -T0 -dc` of the same file, and nixpi's peak memory.
//
//	go run ./builder/bench                      # builder/source pipeline only
//	go run ./builder/bench -nixpi bin/nixpi     # the whole `nixpi build`
//	NIXPI_BIN=bin/nixpi go run ./builder/bench  # same
//	go run ./builder/bench -nixpi bin/nixpi -baseline /tmp/old/nixpi -runs 4
//
// With -baseline, each run is a pair: the two binaries build the same
// base one after the other, in the order flipped every pair, each beside
// the same run's xz; the bench prints the ratios new/baseline and fails
// (exit 1) when their median is over guardLimit (guard.go). `make bench`
// builds the baseline from BENCH_BASELINE.
//
// The base (about 1.7 GiB, xz -T0 in 24 MiB blocks like the official
// images) is generated once and cached under -cache, keyed by generator
// version and size, so reruns only measure. Targets (issue 2): time ratio
// <= 1.15 with hashing included, peak RSS <= 64 MiB. With -nixpi and as
// root it then flashes the built card onto a loop device with dd,
// bmaptool copy and nixpi flash (issue 13; this package's flash.go).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nixpi/nixpi/builder/fixture"
	"github.com/nixpi/nixpi/builder/source"
)

const (
	// generatorVersion changes whenever the generated base would differ,
	// so a stale cache is never measured.
	generatorVersion = 1
	mib              = int64(1) << 20

	targetRatio = 1.15
	targetRSS   = 64 * mib
)

type config struct {
	nixpi       string // bin/nixpi to run `build`; "" = builder/source only
	baseline    string // a second nixpi to alternate with nixpi; "" = none
	buildConfig string // nixpi.toml for `nixpi build`; "" = `nixpi config init`
	cache       string
	fillMiB     int64
	rootMiB     int64
	runs        int
	goDecoders  bool
	flashOnly   bool
	xzLevel     int
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Child mode: run the builder/source pipeline alone, so its peak RSS
	// is measured apart from this process.
	decodeBase := flag.String("decode", "", "internal: decode this base into -out and print stats as JSON")
	decodeOut := flag.String("out", "", "internal: output for -decode")
	goOnly := flag.Bool("go-only", false, "internal: with -decode, do not use xz-utils")

	var c config
	flag.StringVar(&c.nixpi, "nixpi", os.Getenv("NIXPI_BIN"), "nixpi binary to time `build` with (default $NIXPI_BIN; empty: time builder/source only)")
	flag.StringVar(&c.baseline, "baseline", "", "with -nixpi: another nixpi binary to alternate with it on the same base, -runs pairs; exit 1 when -nixpi's median is over 1.10x the baseline's")
	flag.StringVar(&c.buildConfig, "config", "", "config for nixpi build (default: the output of `nixpi config init`)")
	flag.StringVar(&c.cache, "cache", "/var/tmp/nixpi-bench", "directory for the generated base and the output")
	flag.Int64Var(&c.fillMiB, "fill", 1150, "MiB of realistic content in the root filesystem")
	flag.Int64Var(&c.rootMiB, "root", 0, "MiB size of the root partition (0: the fill plus ext4 overhead)")
	flag.IntVar(&c.xzLevel, "xz-level", 3, "xz preset for the generated base (3 compresses several times faster than the default 6 and decodes at about the same speed)")
	flag.IntVar(&c.runs, "runs", 1, "measure this many times, alternating, and report the median")
	flag.BoolVar(&c.goDecoders, "go", true, "also time the pure-Go parallel xz decoder (the path without xz-utils)")
	flag.BoolVar(&c.flashOnly, "flash-only", false, "with -nixpi, as root: build the card once and run only the flash bench")
	flag.Parse()

	if *decodeBase != "" {
		if err := decodeChild(ctx, *decodeBase, *decodeOut, *goOnly); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if flag.NArg() != 0 || c.runs < 1 || c.flashOnly && c.nixpi == "" || c.baseline != "" && (c.nixpi == "" || c.flashOnly) {
		flag.Usage()
		os.Exit(2)
	}
	if err := bench(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// measurement is one timed subprocess.
type measurement struct {
	wall    time.Duration
	cpu     time.Duration // user+system, the process and its children
	maxRSS  int64         // bytes; the larger of the process and the children it waited for
	selfRSS int64         // bytes; the main process alone (VmHWM, polled)
	stats   *childStats
}

func bench(ctx context.Context, c config) error {
	if err := os.MkdirAll(c.cache, 0o755); err != nil {
		return err
	}
	base, err := ensureBase(ctx, c)
	if err != nil {
		return err
	}
	st, err := os.Stat(base)
	if err != nil {
		return err
	}
	fmt.Printf("base: %s (%.0f MiB compressed)\n", base, float64(st.Size())/float64(mib))
	// Warm the page cache so neither side pays for the first read.
	if err := readAll(base); err != nil {
		return err
	}
	out := filepath.Join(c.cache, "out.img")
	defer os.Remove(out)
	defer os.Remove(out + ".sha256")
	defer os.Remove(out + ".bmap")

	self, err := os.Executable()
	if err != nil {
		return err
	}
	nixpiConfig := ""
	if c.nixpi != "" {
		if nixpiConfig, err = ensureBuildConfig(ctx, c); err != nil {
			return err
		}
	}

	type contender struct {
		name string
		argv []string
		out  bool // writes out (removed before each run)
	}
	build := []string{c.nixpi, "build", "--base", base, "--config", nixpiConfig, "--out", out, "--force", "--quiet"}
	if c.flashOnly {
		if _, err := measure(ctx, build); err != nil {
			return fmt.Errorf("nixpi build for the flash bench: %w", err)
		}
		return benchFlash(ctx, c, out)
	}
	contenders := []contender{{"xz -T0 -dc > /dev/null", []string{"xz", "-T0", "-dc", base}, false}}
	// The two nixpi builds of a -baseline run, by index into contenders.
	newBuild, baseBuild := -1, -1
	if c.nixpi != "" {
		contenders = append(contenders, contender{"nixpi build", build, true})
		newBuild = len(contenders) - 1
		if c.baseline != "" {
			baseArgv := slices.Clone(build)
			baseArgv[0] = c.baseline
			contenders = append(contenders, contender{"nixpi build (baseline)", baseArgv, true})
			baseBuild = len(contenders) - 1
			fmt.Printf("baseline: %s; new: %s; load average before the runs: %s\n", c.baseline, c.nixpi, loadAverage())
		}
	} else {
		contenders = append(contenders, contender{"builder/source (default decoder)",
			[]string{self, "-decode", base, "-out", out}, true})
	}
	if c.goDecoders {
		contenders = append(contenders, contender{"builder/source (Go decoder, no xz-utils)",
			[]string{self, "-decode", base, "-out", out, "-go-only"}, true})
	}

	results := make([][]measurement, len(contenders))
	var loads []string // after each run
	for run := range c.runs {
		for _, i := range runOrder(run, len(contenders), newBuild, baseBuild) {
			ct := contenders[i]
			if ct.out {
				os.Remove(out)
			}
			m, err := measure(ctx, ct.argv)
			if err != nil {
				return fmt.Errorf("%s: %w", ct.name, err)
			}
			results[i] = append(results[i], m)
			fmt.Printf("run %d: %-42s %7.2f s wall %7.2f s cpu  peak RSS %6.1f MiB (main process %6.1f MiB)%s\n", run+1, ct.name,
				m.wall.Seconds(), m.cpu.Seconds(), float64(m.maxRSS)/float64(mib), float64(m.selfRSS)/float64(mib), m.stats.describe())
		}
		loads = append(loads, loadAverage())
	}

	floor := median(results[0])
	fmt.Printf("\nxz -T0 -dc (floor): %.2f s, its peak RSS %.1f MiB\n", floor.wall.Seconds(), float64(floor.maxRSS)/float64(mib))
	status := func(ok bool) string {
		if ok {
			return "meets target"
		}
		return "MISSES target"
	}
	for i, ct := range contenders[1:] {
		m := median(results[i+1])
		ratio := m.wall.Seconds() / floor.wall.Seconds()
		fmt.Printf("%s: %.2f s, ratio %.3f (target <= %.2f: %s); cpu %.2f s vs %.2f s\n", ct.name, m.wall.Seconds(), ratio, targetRatio,
			status(ratio <= targetRatio), m.cpu.Seconds(), floor.cpu.Seconds())
		if m.stats != nil {
			fmt.Printf("  decoder %s; image %.0f MiB; input sha256 %s (verified %v)\n",
				m.stats.Decoder, float64(m.stats.ImageSize)/float64(mib), m.stats.InputSHA256, m.stats.Verified)
		}
		fmt.Printf("  peak RSS: %.1f MiB (target <= %d MiB: %s); any xz-utils child included, the larger: %.1f MiB\n",
			float64(m.selfRSS)/float64(mib), targetRSS/mib, status(m.selfRSS <= targetRSS), float64(m.maxRSS)/float64(mib))
	}
	var guardErr error // returned after the flash bench, so every figure is printed
	if baseBuild >= 0 {
		v, err := reportPairs(c, results[0], results[newBuild], results[baseBuild], loads)
		if err != nil {
			return err
		}
		guardErr = v.err(c.baseline)
	}
	if c.nixpi != "" {
		// The last contender may have left a bare base in out: flash a card.
		os.Remove(out)
		if _, err := measure(ctx, build); err != nil {
			return fmt.Errorf("nixpi build for the flash bench: %w", err)
		}
		if err := benchFlash(ctx, c, out); err != nil {
			return err
		}
	}
	return guardErr
}

// reportPairs prints each pair of a -baseline run with the load average
// after it, and the ratios' median and range, and returns the verdict.
func reportPairs(c config, floor, newBuild, baseBuild []measurement, loads []string) (guardVerdict, error) {
	walls := func(ms []measurement) []time.Duration {
		var d []time.Duration
		for _, m := range ms {
			d = append(d, m.wall)
		}
		return d
	}
	v, err := judge(walls(newBuild), walls(baseBuild), guardLimit)
	if err != nil {
		return guardVerdict{}, err
	}
	fmt.Printf("\nnew %s against baseline %s, pairs on the same base:\n", c.nixpi, c.baseline)
	for i := range v.ratios {
		first := "new first"
		if baselineFirst(i) {
			first = "baseline first"
		}
		fmt.Printf("pair %d (%s): new %.2f s, baseline %.2f s, xz %.2f s: new/baseline %.3f, new/xz %.3f, baseline/xz %.3f; load average after: %s\n",
			i+1, first, newBuild[i].wall.Seconds(), baseBuild[i].wall.Seconds(), floor[i].wall.Seconds(), v.ratios[i],
			ratio(newBuild[i].wall, floor[i].wall), ratio(baseBuild[i].wall, floor[i].wall), loads[i])
	}
	fmt.Println(v.summary())
	return v, nil
}

// measure runs argv, stdout to /dev/null unless it is our own child (which
// prints its stats as JSON), and returns wall time and peak RSS.
func measure(ctx context.Context, argv []string) (measurement, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return measurement{}, err
	}
	defer devNull.Close()
	var stdout *os.File
	self := slices.Contains(argv, "-decode")
	if self {
		if stdout, err = os.CreateTemp("", "nixpi-bench-stats-"); err != nil {
			return measurement{}, err
		}
		defer os.Remove(stdout.Name())
		defer stdout.Close()
		cmd.Stdout = stdout
	} else {
		cmd.Stdout = devNull
	}
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return measurement{}, err
	}
	peak := make(chan int64)
	stopPolling := make(chan struct{})
	go pollHWM(cmd.Process.Pid, stopPolling, peak)
	err = cmd.Wait()
	close(stopPolling)
	m := measurement{wall: time.Since(start), selfRSS: <-peak}
	if err != nil {
		return measurement{}, err
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		m.maxRSS = ru.Maxrss * 1024 // KiB on Linux
		m.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if self {
		if _, err := stdout.Seek(0, io.SeekStart); err != nil {
			return m, err
		}
		m.stats = new(childStats)
		if err := json.NewDecoder(stdout).Decode(m.stats); err != nil {
			return m, fmt.Errorf("read child stats: %w", err)
		}
	}
	return m, nil
}

// pollHWM samples the peak resident set (VmHWM) of pid until stop is
// closed and sends the last value seen. rusage will not do: it gives the
// larger of a process and its children (nixpi's xz-utils child is not
// nixpi), and a child's own RUSAGE_SELF includes the forking parent's
// peak from before exec.
func pollHWM(pid int, stop <-chan struct{}, peak chan<- int64) {
	var last int64
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	status := fmt.Sprintf("/proc/%d/status", pid)
	for {
		if data, err := os.ReadFile(status); err == nil {
			for _, line := range strings.Split(string(data), "\n") {
				if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
					if kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64); err == nil && kib*1024 > last {
						last = kib * 1024
					}
				}
			}
		}
		select {
		case <-stop:
			peak <- last
			return
		case <-tick.C:
		}
	}
}

func median(ms []measurement) measurement {
	sorted := slices.Clone(ms)
	slices.SortFunc(sorted, func(a, b measurement) int { return int(a.wall - b.wall) })
	return sorted[len(sorted)/2]
}

// childStats is what the -decode child reports.
type childStats struct {
	source.Stats
}

func (s *childStats) describe() string {
	if s == nil {
		return ""
	}
	return fmt.Sprintf("  (%s)", s.Decoder)
}

// decodeChild is the builder/source pipeline as nixpi build runs it: open
// with the sidecar checksum, decompress sparsely into out, verify.
func decodeChild(ctx context.Context, base, out string, goOnly bool) error {
	s, err := source.Open(ctx, base, source.Options{DisableExternalXZ: goOnly})
	if err != nil {
		return err
	}
	defer s.Close()
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := s.WriteTo(ctx, f)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(childStats{Stats: st})
}

// ensureBase returns the cached xz base, generating it when missing: a
// fixture image (builder/fixture) with fillMiB of realistic root content,
// compressed by `xz -T0` in 24 MiB blocks (as the official images) with a
// sha256sum sidecar next to it.
func ensureBase(ctx context.Context, c config) (string, error) {
	name := fmt.Sprintf("base-v%d-fill%d-root%d-xz%d.img.xz", generatorVersion, c.fillMiB, c.rootMiB, c.xzLevel)
	base := filepath.Join(c.cache, name)
	if _, err := os.Stat(base + ".sha256"); err == nil {
		return base, nil // the sidecar is written last: the base is complete
	}
	fmt.Printf("generating %s (once; cached) ...\n", base)
	start := time.Now()
	// A directory of its own, so that two benches generating at once do
	// not write the same files; the rename below is the one that counts.
	work, err := os.MkdirTemp(c.cache, "generate-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	raw := filepath.Join(work, "base.img")
	if _, err := fixture.WriteContext(ctx, raw, fixture.Options{
		Fill:     c.fillMiB * mib,
		RootSize: c.rootMiB * mib,
		TempDir:  work,
	}); err != nil {
		return "", err
	}
	fmt.Printf("  fixture written in %s; compressing with xz -T0 ...\n", time.Since(start).Round(time.Second))
	tmp := filepath.Join(work, name)
	if err := xzCompress(ctx, raw, tmp, c.xzLevel); err != nil {
		return "", err
	}
	sum, err := sha256File(tmp)
	if err != nil {
		return "", err
	}
	sidecar := filepath.Join(work, name+".sha256")
	if err := os.WriteFile(sidecar, []byte(sum+"  "+name+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, base); err != nil {
		return "", err
	}
	if err := os.Rename(sidecar, base+".sha256"); err != nil {
		return "", err
	}
	fmt.Printf("  done in %s\n", time.Since(start).Round(time.Second))
	return base, nil
}

// xzCompress packs in as the official images are: xz -T0, whose blocks are
// 24 MiB (three times the default 8 MiB dictionary) whatever the level.
func xzCompress(ctx context.Context, in, out string, level int) error {
	src, err := os.Open(in)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(out)
	if err != nil {
		return err
	}
	defer dst.Close()
	argv := []string{"xz", "-T0", fmt.Sprintf("-%d", level), "--block-size=24MiB", "-c"}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = src, dst, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s < %s: %w", strings.Join(argv, " "), in, err)
	}
	return dst.Close()
}

// ensureBuildConfig returns -config or writes `nixpi config init` output.
func ensureBuildConfig(ctx context.Context, c config) (string, error) {
	if c.buildConfig != "" {
		return c.buildConfig, nil
	}
	path := filepath.Join(c.cache, "nixpi.toml")
	data, err := exec.CommandContext(ctx, c.nixpi, "config", "init").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("%s config init: %w (pass -config)", c.nixpi, err)
	}
	return path, os.WriteFile(path, data, 0o644)
}
