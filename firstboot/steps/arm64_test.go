package steps

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/system/systemtest"
)

func TestArm64ProbeSeesAarch64(t *testing.T) {
	t.Parallel()
	p := newPiEnv(t)
	p.run.On("aarch64\n", p.Tools.Uname, "-m")
	done, why, err := NewArm64().Probe(context.Background(), p.Env)
	if !done || err != nil || why != "the kernel is 64-bit (aarch64)" {
		t.Fatalf("Probe = %v, %q, %v", done, why, err)
	}
}

// Through the engine: the switch is written, the reboot requested once,
// and after the reboot the probe skips the step.
func TestArm64SwitchesAndReboots(t *testing.T) {
	t.Parallel()
	p := newPiEnv(t)
	p.put(t, "/proc/sys/kernel/random/boot_id", "first\n")
	p.run.On("armv7l\n", p.Tools.Uname, "-m").Times = 2 // the probe and the action
	machine := p.Machine.(*systemtest.Machine)
	eng := &engine.Engine{Steps: []engine.Step{NewArm64()}, Env: p.Env}
	out, err := eng.Run(context.Background(), nil)
	if out != engine.RebootRequested || err != nil || machine.Reboots() != 1 {
		t.Fatalf("Run = %v, %v, reboots %d", out, err, machine.Reboots())
	}
	got, err := os.ReadFile(p.Path("/boot/firmware/config.txt"))
	if err != nil {
		t.Fatal(err)
	}
	want := "# For more options and information see\n[pi4]\narm_boost=1\n\n[all]\nenable_uart=1\narm_64bit=1\n"
	if string(got) != want {
		t.Errorf("config.txt =\n%s\nwant\n%s", got, want)
	}
	systemtest.Golden(t, "arm64-switch.argv", p.run.Transcript())

	// The next boot runs the 64-bit kernel.
	p.put(t, "/proc/sys/kernel/random/boot_id", "second\n")
	p.run.On("aarch64\n", p.Tools.Uname, "-m")
	eng = &engine.Engine{Steps: []engine.Step{NewArm64()}, Env: p.Env}
	if out, err := eng.Run(context.Background(), nil); out != engine.Finished || err != nil || machine.Reboots() != 1 {
		t.Fatalf("after reboot: %v, %v, reboots %d", out, err, machine.Reboots())
	}
	if events := p.journalEvents(t); events != "start reboot skip" {
		t.Errorf("journal events = %q", events)
	}
}

func TestArm64AlreadySetButStill32Bit(t *testing.T) {
	t.Parallel()
	p := newPiEnv(t)
	before := "[all]\narm_64bit=1\n"
	p.put(t, "/boot/firmware/config.txt", before)
	p.run.On("armv7l\n", p.Tools.Uname, "-m")
	err := NewArm64().Run(context.Background(), p.Env)
	if err == nil || !strings.Contains(err.Error(), "line 2 already sets arm_64bit, but the running kernel is armv7l") {
		t.Fatalf("Run = %v", err)
	}
	if !strings.Contains(engine.HintOf(err), "kernel8.img") {
		t.Errorf("hint = %q", engine.HintOf(err))
	}
	if got, _ := os.ReadFile(p.Path("/boot/firmware/config.txt")); string(got) != before {
		t.Errorf("config.txt changed to %q", got)
	}
}

// A power cut after config.txt was written but before the reboot was
// recorded: the 64-bit kernel starts anyway, and the engine redoes the step
// from its start, which finds nothing left to do (no failure, no reboot).
func TestArm64CrashBeforeRebootIsRedoneSafely(t *testing.T) {
	t.Parallel()
	p := newPiEnv(t)
	p.put(t, "/proc/sys/kernel/random/boot_id", "first\n")
	p.run.On("armv7l\n", p.Tools.Uname, "-m").Times = 2
	type crash struct{}
	p.CrashPoint = func(point string) {
		if point == "arm64-after-write" {
			panic(crash{})
		}
	}
	func() {
		defer func() {
			if recover() != (crash{}) {
				t.Fatal("no crash")
			}
		}()
		eng := &engine.Engine{Steps: []engine.Step{NewArm64()}, Env: p.Env}
		eng.Run(context.Background(), nil)
	}()
	got, _ := os.ReadFile(p.Path("/boot/firmware/config.txt"))
	if strings.Count(string(got), "arm_64bit=1") != 1 {
		t.Errorf("config.txt after crash:\n%s", got)
	}

	p.CrashPoint = nil
	p.put(t, "/proc/sys/kernel/random/boot_id", "second\n")
	p.run.On("aarch64\n", p.Tools.Uname, "-m")
	eng := &engine.Engine{Steps: []engine.Step{NewArm64()}, Env: &engine.Env{
		Config: p.Config, Root: p.Root, BootDir: p.BootDir, Run: p.Run, Machine: p.Machine, Tools: p.Tools, Progress: p.Progress,
	}}
	out, err := eng.Run(context.Background(), nil)
	if out != engine.Finished || err != nil || p.Machine.(*systemtest.Machine).Reboots() != 0 {
		t.Fatalf("after the power cut: %v, %v, reboots %d\n%s", out, err, p.Machine.(*systemtest.Machine).Reboots(), p.log())
	}
	if events := p.journalEvents(t); events != "start start done" {
		t.Errorf("journal events = %q, want the interrupted start, then the redo", events)
	}
	if after, _ := os.ReadFile(p.Path("/boot/firmware/config.txt")); string(after) != string(got) {
		t.Errorf("config.txt changed on the redo:\n%s", after)
	}
}
