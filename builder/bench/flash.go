package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nixpi/nixpi/builder"
)

// flashSlack is the target's allowance over "mapped fraction × dd's time"
// for flash's write phase (issue 13).
const flashSlack = 1.10

// benchFlash writes the built image out onto a loop device (direct I/O
// onto a file in the cache directory) three ways, in one run: dd of the
// whole image, bmaptool copy with its .bmap, and nixpi flash, and prints
// the time and the bytes each wrote (from the device's sysfs stat).
func benchFlash(ctx context.Context, c config, out string) error {
	if os.Geteuid() != 0 {
		fmt.Println("\nflash: skipped (needs root for a loop device)")
		return nil
	}
	st, err := os.Stat(out)
	if err != nil {
		return err
	}
	ranges, err := builder.ReadBmap(out+".bmap", st.Size())
	if err != nil {
		return err
	}
	var mapped int64
	for _, r := range ranges {
		mapped += r.End - r.Start
	}
	file := filepath.Join(c.cache, "flash-target.img")
	defer os.Remove(file)
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(file, st.Size()); err != nil {
		return err
	}
	b, err := exec.CommandContext(ctx, "losetup", "--find", "--show", "--direct-io=on", file).Output()
	if err != nil {
		return fmt.Errorf("losetup: %w", err)
	}
	dev := strings.TrimSpace(string(b))
	defer exec.Command("losetup", "--detach", dev).Run()
	fmt.Printf("\nflash of %s (%.0f MiB, %.0f%% mapped) onto %s:\n", out, float64(st.Size())/float64(mib), 100*float64(mapped)/float64(st.Size()), dev)
	contenders := []struct {
		name string
		argv []string
	}{
		{"dd bs=4M oflag=direct conv=fsync", []string{"dd", "if=" + out, "of=" + dev, "bs=4M", "oflag=direct", "conv=fsync", "status=none"}},
		{"bmaptool copy", []string{"bmaptool", "-q", "copy", "--bmap", out + ".bmap", out, dev}},
		{"nixpi flash", []string{c.nixpi, "flash", "--yes", "--allow-non-removable", out, dev}},
	}
	times := map[string]float64{}
	var flashWrite, flashVerify float64
	for _, ct := range contenders {
		if _, err := exec.LookPath(ct.argv[0]); err != nil {
			fmt.Printf("  %-34s skipped: %s not installed\n", ct.name, ct.argv[0])
			continue
		}
		// Every contender starts from an empty target.
		if err := exec.CommandContext(ctx, "blkdiscard", dev).Run(); err != nil {
			return fmt.Errorf("blkdiscard %s: %w", dev, err)
		}
		before, readBefore := sectorsWritten(dev), sectorsRead(dev)
		start := time.Now()
		cmd := exec.CommandContext(ctx, ct.argv[0], ct.argv[1:]...)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.Output()
		wall := time.Since(start).Seconds()
		if err != nil {
			return fmt.Errorf("%s: %w", ct.name, err)
		}
		written := (sectorsWritten(dev) - before) * 512
		times[ct.name] = wall
		extra := ""
		if ct.name == "nixpi flash" {
			flashWrite, flashVerify = flashPhases(string(stdout))
			extra = fmt.Sprintf("  (write %.2f s, verify %.2f s reading %.1f MiB)", flashWrite, flashVerify, float64(sectorsRead(dev)-readBefore)*512/float64(mib))
		}
		fmt.Printf("  %-34s %7.2f s  %8.1f MiB written%s\n", ct.name, wall, float64(written)/float64(mib), extra)
	}
	// What verification is held to: one direct read of the mapped data.
	readTime, err := readMapped(dev, ranges)
	if err != nil {
		return err
	}
	fmt.Printf("  %-34s %7.2f s  %8.1f MiB read\n", "O_DIRECT read of the mapped ranges", readTime, float64(mapped)/float64(mib))
	verdict := map[bool]string{true: "meets target", false: "MISSES target"}
	if dd, ok := times["dd bs=4M oflag=direct conv=fsync"]; ok && flashWrite > 0 {
		fraction := float64(mapped) / float64(st.Size())
		target := fraction * dd * flashSlack
		fmt.Printf("  flash write phase %.2f s = %.3f x dd; target <= mapped fraction %.3f x dd + 10%% = %.2f s: %s\n", flashWrite, flashWrite/dd, fraction, target, verdict[flashWrite <= target])
		if bm, ok := times["bmaptool copy"]; ok {
			fmt.Printf("  flash write phase %.2f s = %.3f x bmaptool copy (%.2f s): %s\n", flashWrite, flashWrite/bm, bm, verdict[flashWrite <= bm])
		}
		fmt.Printf("  flash verify phase %.2f s = %.3f x one direct read of the mapped data (%.2f s; target <= 1.10): %s\n", flashVerify, flashVerify/readTime, readTime, verdict[flashVerify <= readTime*flashSlack])
	}
	return nil
}

// readMapped reads ranges from dev with O_DIRECT in 8 MiB requests, as
// flash's verification does, without hashing, and returns the seconds.
func readMapped(dev string, ranges []builder.MappedRange) (float64, error) {
	f, err := os.OpenFile(dev, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf, err := syscall.Mmap(-1, 0, 8<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return 0, err
	}
	defer syscall.Munmap(buf)
	start := time.Now()
	for _, r := range ranges {
		for off := r.Start; off < r.End; {
			n := min(int64(len(buf)), r.End-off)
			if _, err := f.ReadAt(buf[:n], off); err != nil {
				return 0, fmt.Errorf("read %s at byte %d: %w", dev, off, err)
			}
			off += n
		}
	}
	return time.Since(start).Seconds(), nil
}

// sectorsRead is the device's count of 512-byte sectors read (field 3
// of /sys/block/NAME/stat).
func sectorsRead(dev string) int64 { return statField(dev, 2) }

// sectorsWritten is the device's count of 512-byte sectors written
// (field 7 of /sys/block/NAME/stat).
func sectorsWritten(dev string) int64 { return statField(dev, 6) }

func statField(dev string, i int) int64 {
	b, _ := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "stat"))
	f := strings.Fields(string(b))
	if len(f) <= i {
		return 0
	}
	n, _ := strconv.ParseInt(f[i], 10, 64)
	return n
}

var flashLine = regexp.MustCompile(`in ([0-9.]+)s \(.*verified in ([0-9.]+)s`)

// flashPhases reads the write and verify times from nixpi flash's line.
func flashPhases(line string) (write, verify float64) {
	m := flashLine.FindStringSubmatch(line)
	if m == nil {
		return 0, 0
	}
	write, _ = strconv.ParseFloat(m[1], 64)
	verify, _ = strconv.ParseFloat(m[2], 64)
	return write, verify
}
