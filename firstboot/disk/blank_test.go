package disk

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/firstboot/system"
	"github.com/nixpi/nixpi/firstboot/system/systemtest"
)

// sparseFile is a file of size zero bytes with data written at the given
// offsets: a disk image for the zero sampling, no loop device needed.
func sparseFile(t testing.TB, size int64, data map[int64][]byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off, b := range data {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func randomBytes(t testing.TB, n int64) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestNonZeroRegionsBound checks the bound the blank rule states: an extent
// longer than the gap between two sampled windows is found wherever it lies;
// one that fits in the gap can be missed (the bound is tight, not a guess).
func TestNonZeroRegionsBound(t *testing.T) {
	t.Parallel()
	const size = 1 << 30
	gap := int64(BlankStrideBytes - BlankWindowBytes)
	for _, tc := range []struct {
		name  string
		off   int64
		n     int64
		found bool
	}{
		{"blank", 0, 0, false},
		{"one byte in the first MiB", 4242, 1, true},
		{"one byte in the last MiB", size - 4242, 1, true},
		{"extent one sector longer than the gap, right after a window", 20*BlankStrideBytes + BlankWindowBytes, gap + 512, true},
		{"extent one sector longer than the gap, unaligned", 33*BlankStrideBytes + BlankWindowBytes - 700, gap + 512, true},
		{"extent exactly filling a gap", 20*BlankStrideBytes + BlankWindowBytes, gap, false},
		{"one byte between windows", 40*BlankStrideBytes + 1<<20, 1, false},
		{"one byte in a window", 40*BlankStrideBytes + 100, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data := map[int64][]byte{}
			if tc.n > 0 {
				b := randomBytes(t, tc.n)
				b[0], b[len(b)-1] = 0xff, 0xff // random bytes may be zero at the ends
				data[tc.off] = b
			}
			got, err := nonZeroRegions(sparseFile(t, size, data), size, 512, 3)
			if err != nil {
				t.Fatal(err)
			}
			if found := len(got) > 0; found != tc.found {
				t.Fatalf("found %v (at %v), want %v", found, got, tc.found)
			}
		})
	}
}

func TestSignatureDescribe(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sig  Signature
		want string
	}{
		{Signature{Offset: "0x200", Type: "gpt"}, "a partition table (gpt)"},
		{Signature{Offset: "0x7ffffe00", Type: "gpt"}, "a GPT backup table (the primary is damaged)"},
		{Signature{Offset: "0x1fe", Type: "dos"}, "a partition table (dos)"},
		{Signature{Offset: "0x1000", Type: "linux_raid_member", Label: "nas:0"}, `a RAID member signature (linux_raid_member label "nas:0")`},
		{Signature{Offset: "0x218", Type: "LVM2_member", UUID: "abc"}, "an LVM physical volume signature (LVM2_member uuid abc)"},
		{Signature{Offset: "0x0", Type: "crypto_LUKS"}, "an encrypted volume header (crypto_LUKS)"},
	} {
		if got := tc.sig.Describe(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.sig, got, tc.want)
		}
	}
}

// BenchmarkBlankCheck times the whole blank rule (wipefs, blkid at the usual
// starts, the zero sampling) on a sparse 2 TiB loop device, with the real
// tools. `make bench` runs it once.
func BenchmarkBlankCheck(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("skipping: needs root for a loop device")
	}
	const size = 2 << 40
	img := sparseFile(b, size, nil)
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		b.Skipf("skipping: losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	b.Cleanup(func() { _ = exec.Command("losetup", "--detach", dev).Run() })
	p := BlankProbe{Run: system.ExecRunner{}, Tools: system.DefaultTools(), Dev: dev, File: dev, Size: size, SectorSize: 512}
	var took time.Duration
	for b.Loop() {
		start := time.Now()
		found, err := CheckBlank(context.Background(), p)
		took = time.Since(start)
		if err != nil || len(found) > 0 {
			b.Fatalf("blank 2 TiB disk: found %v, err %v", found, err)
		}
	}
	reads := 2 + (size-BlankEdgeBytes-1)/BlankStrideBytes // the two edges and the windows between
	b.ReportMetric(float64(reads), "reads")
	b.Logf("blank check of a sparse 2 TiB loop device: %s (%d reads of %d KiB every %d MiB, first and last MiB whole)",
		took.Round(time.Millisecond), reads, BlankWindowBytes>>10, BlankStrideBytes>>20)
}

// TestCheckBlankReadsTheTools: what wipefs and blkid report (recorded
// outputs; the loop-device suite runs the real ones) becomes findings with
// their offsets; blkid's "nothing" (exit 2) and "ambivalent" (exit 8) are
// told apart from its failing.
func TestCheckBlankReadsTheTools(t *testing.T) {
	t.Parallel()
	const size = 4 << 30
	tools := system.DefaultTools()
	probe := func(run *systemtest.Runner) BlankProbe {
		return BlankProbe{Run: run, Tools: tools, Dev: "/dev/sdz", File: sparseFile(t, size, nil), Size: size, SectorSize: 512, Starts: []int64{600 << 20}}
	}
	run := &systemtest.Runner{}
	run.On(`{"signatures":[{"offset":"0xfffffe00","type":"gpt"}]}`, tools.Wipefs, "--no-act", "--json", "/dev/sdz")
	run.Fail(2, "", tools.Blkid)
	run.Fail(8, "ambivalent result", tools.Blkid, "-p", "-o", "export", "-O", "4194304", "/dev/sdz")
	run.On("TYPE=xfs\nLABEL=media\nUSAGE=filesystem\n", tools.Blkid, "-p", "-o", "export", "-O", "629145600", "/dev/sdz")
	found, err := CheckBlank(context.Background(), probe(run))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range found {
		got = append(got, f.String())
	}
	want := []string{
		"a GPT backup table (the primary is damaged) at 4.0 GiB (0xfffffe00)",
		"several filesystem signatures (blkid: ambivalent) at 4.0 MiB (0x400000)",
		`a filesystem signature (xfs label "media") at 600.0 MiB (0x25800000)`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	broken := &systemtest.Runner{}
	broken.On("", tools.Wipefs)
	broken.Fail(4, "blkid: invalid offset", tools.Blkid)
	if _, err := CheckBlank(context.Background(), probe(broken)); err == nil || !strings.Contains(err.Error(), "blkid: invalid offset") {
		t.Errorf("a failing blkid: err = %v, want it reported (a disk is never called blank unchecked)", err)
	}
}
