package qemu

import (
	"bufio"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/config"
)

func TestVMArgv(t *testing.T) {
	t.Parallel()
	v := &VM{Card: "/w/card.img", SSD: "/w/ssd.img", SSDSerial: "S1", MemoryMiB: 2048, CPUs: 2, Tools: DefaultTools()}
	argv := v.Argv("/w/k", "/w/i", "console=ttyAMA0 root=PARTUUID=x-02", "/w/qmp.sock")
	joined := strings.Join(argv, " ")
	for _, want := range []string{
		"-M virt -cpu cortex-a72 -smp 2 -m 2048 -no-reboot",
		"-kernel /w/k -initrd /w/i -append console=ttyAMA0 root=PARTUUID=x-02",
		"-drive if=none,id=card,format=raw,file=/w/card.img -device virtio-blk-pci,drive=card",
		"-drive if=none,id=ssd,format=raw,file=/w/ssd.img -device qemu-xhci,id=xhci -device usb-storage,bus=xhci.0,drive=ssd,serial=S1",
		"-nic none",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("argv lacks %q:\n%s", want, joined)
		}
	}
	if argv[0] != "/usr/bin/qemu-system-aarch64" {
		t.Errorf("argv[0] = %q", argv[0])
	}
	if slices.Contains(argv, "-initrd") != true {
		t.Error("no -initrd")
	}
	if argv := v.Argv("/w/k", "", "console=ttyAMA0", "/w/q"); slices.Contains(argv, "-initrd") {
		t.Errorf("-initrd without an initramfs: %v", argv)
	}
	v.GuestForward = GuestForward("/bin/busybox", 40123)
	joined = strings.Join(v.Argv("/w/k", "", "console=ttyAMA0", "/w/q"), " ")
	want := "-netdev user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:/bin/busybox nc 127.0.0.1 40123 -device virtio-net-pci,netdev=net0"
	if !strings.HasSuffix(joined, want) || strings.Contains(joined, "-nic none") {
		t.Errorf("with the stand-in server, argv ends\n%s\nwant\n%s", joined, want)
	}
}

// TestE2EConfig: the e2e config is a valid install config with what the
// scenarios rely on: wipe off (refusal), a small swap, GPT with btrfs.
func TestE2EConfig(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load("../../testdata/e2e/nixpi.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	l := cfg.Layout
	if cfg.Target.Wipe || l.Table != "gpt" || l.RootFS != "btrfs" || l.SwapSize.RAM || l.SwapSize.Bytes != 256*config.MiB || len(l.Subvolumes) == 0 {
		t.Errorf("e2e config changed what the scenarios rely on: %+v", cfg)
	}
}

func TestWatchPatterns(t *testing.T) {
	t.Parallel()
	if m := stepHeader.FindStringSubmatch("[   42.1] nixpi-firstboot[301]: step 5 of 7, partition: write the partition table"); m == nil || m[1] != "partition" {
		t.Errorf("step header not recognised: %v", m)
	}
	if !allStepDone.MatchString("all 7 steps done. Log in on the console of nixpi-e2e.") {
		t.Error("the finish line is not recognised")
	}
}

func TestStripANSI(t *testing.T) {
	t.Parallel()
	in := "[\x1b[0;32m  OK  \x1b[0m] Finished \x1b[0;1;39mkernel-command-li…ommand from Kernel Command Line\x1b[0m."
	want := "[  OK  ] Finished kernel-command-li…ommand from Kernel Command Line."
	if got := StripANSI(in); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, line := range []string{want, "[  OK  ] Finished kernel-command-li… Command from Kernel Command Line."} {
		if !hookFinished.MatchString(line) {
			t.Errorf("the hook's finish line %q is not recognised", line)
		}
	}
	if hookFinished.MatchString("         Starting kernel-command-li…ommand from Kernel Command Line...") {
		t.Error("the hook's start line counts as finished")
	}
}

func TestScanConsoleLinesPassesOnTheLoginPrompt(t *testing.T) {
	// The prompt arrives in pieces and no newline follows it.
	r, w := io.Pipe()
	go func() {
		for _, piece := range []string{"[  OK  ] Started getty\r\n", "\x1b[6nraspberrypi log", "in: "} {
			w.Write([]byte(piece))
		}
		// Left open, as getty leaves the console: the prompt must come
		// through without EOF.
	}()
	sc := bufio.NewScanner(r)
	sc.Split(scanConsoleLines)
	var got []string
	for len(got) < 2 && sc.Scan() {
		got = append(got, StripANSI(strings.TrimRight(sc.Text(), "\r")))
	}
	w.Close()
	if len(got) != 2 || got[0] != "[  OK  ] Started getty" || !strings.HasSuffix(got[1], "raspberrypi login: ") {
		t.Fatalf("lines %q, want the getty line and then the prompt", got)
	}
}
