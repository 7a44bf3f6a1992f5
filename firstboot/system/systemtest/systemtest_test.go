package systemtest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/system"
)

func TestRunnerLongestPrefixAndTimes(t *testing.T) {
	t.Parallel()
	r := &Runner{}
	r.On("generic\n", "/usr/bin/lsblk")
	r.On("specific\n", "/usr/bin/lsblk", "--json", "/dev/sda")
	r.Fail(2, "busy", "/usr/sbin/wipefs").Times = 1
	r.On("wiped\n", "/usr/sbin/wipefs")
	ctx := context.Background()

	if out, err := r.Output(ctx, "/usr/bin/lsblk", "--json", "/dev/sda", "-b"); err != nil || string(out) != "specific\n" {
		t.Errorf("longest prefix: %q, %v", out, err)
	}
	if out, err := r.Output(ctx, "/usr/bin/lsblk", "--json", "/dev/sdb"); err != nil || string(out) != "generic\n" {
		t.Errorf("shorter prefix: %q, %v", out, err)
	}
	_, err := r.Output(ctx, "/usr/sbin/wipefs", "--all", "/dev/sda")
	var ce *system.CommandError
	var ee *ExitError
	if !errors.As(err, &ce) || !errors.As(err, &ee) || ee.Code != 2 || !strings.Contains(err.Error(), "stderr: busy") {
		t.Errorf("scripted failure: %v", err)
	}
	if out, err := r.Output(ctx, "/usr/sbin/wipefs", "--all", "/dev/sda"); err != nil || string(out) != "wiped\n" {
		t.Errorf("after Times ran out: %q, %v", out, err)
	}
	if _, err := r.Output(ctx, "/usr/sbin/mkfs.btrfs", "/dev/sda3"); err == nil || !strings.Contains(err.Error(), "no scripted reply") {
		t.Errorf("unscripted command: %v", err)
	}
	want := "/usr/bin/lsblk --json /dev/sda -b\n/usr/bin/lsblk --json /dev/sdb\n/usr/sbin/wipefs --all /dev/sda\n/usr/sbin/wipefs --all /dev/sda\n/usr/sbin/mkfs.btrfs /dev/sda3\n"
	if got := r.Transcript(); got != want {
		t.Errorf("transcript:\n%s\nwant\n%s", got, want)
	}
}

func TestMachineRecords(t *testing.T) {
	t.Parallel()
	m := &Machine{}
	if err := m.Reboot(context.Background()); err != nil || m.Reboots() != 1 {
		t.Fatalf("Reboot = %v, count %d", err, m.Reboots())
	}
	m.Err = errors.New("no")
	if err := m.Reboot(context.Background()); err == nil || m.Reboots() != 1 {
		t.Fatalf("failing Reboot = %v, count %d", err, m.Reboots())
	}
}

func TestSystemdMachineRunsSystemctlReboot(t *testing.T) {
	t.Parallel()
	r := &Runner{}
	r.On("", "/usr/bin/systemctl", "--no-block", "reboot")
	m := system.SystemdMachine{Run: r, Systemctl: "/usr/bin/systemctl"}
	if err := m.Reboot(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := r.Transcript(); got != "/usr/bin/systemctl --no-block reboot\n" {
		t.Errorf("ran %q", got)
	}
	r2 := &Runner{}
	r2.Fail(1, "Failed to connect to bus", "/usr/bin/systemctl")
	err := system.SystemdMachine{Run: r2, Systemctl: "/usr/bin/systemctl"}.Reboot(context.Background())
	if err == nil || !strings.Contains(err.Error(), "reboot: /usr/bin/systemctl --no-block reboot: exit status 1: stderr: Failed to connect to bus") {
		t.Errorf("failing systemctl: %v", err)
	}
}

func TestRunnerStreamsScriptedStderr(t *testing.T) {
	t.Parallel()
	r := &Runner{}
	r.On("/nix/store/abc-system\n", "/usr/bin/nix", "build").Stderr = "@nix {\"action\":\"msg\"}\nlast\n"
	r.Fail(137, "killed\n", "/usr/bin/nix", "copy")
	var _ system.Streamer = r
	var lines []string
	out, err := r.Stream(context.Background(), func(l string) { lines = append(lines, l) }, "/usr/bin/nix", "build", "x")
	if err != nil || string(out) != "/nix/store/abc-system\n" || len(lines) != 2 || lines[1] != "last" {
		t.Fatalf("Stream = %q, %v, lines %q", out, err, lines)
	}
	lines = nil
	_, err = r.Stream(context.Background(), func(l string) { lines = append(lines, l) }, "/usr/bin/nix", "copy")
	var ee interface{ ExitCode() int }
	if !errors.As(err, &ee) || ee.ExitCode() != 137 || len(lines) != 1 || lines[0] != "killed" {
		t.Fatalf("failing Stream = %v, lines %q", err, lines)
	}
	if got := r.Transcript(); got != "/usr/bin/nix build x\n/usr/bin/nix copy\n" {
		t.Errorf("transcript %q", got)
	}
}
