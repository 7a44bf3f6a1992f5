package steps

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/system"
	"github.com/nixpi/nixpi/firstboot/system/systemtest"
)

// piEnv is a temp root shaped like a Raspberry Pi 4 with 4 GB running
// Raspberry Pi OS, with a recording runner and a fake clock.
type piEnv struct {
	*engine.Env
	run  *systemtest.Runner
	logs []string
}

func newPiEnv(t *testing.T) *piEnv {
	t.Helper()
	run := &systemtest.Runner{}
	now := time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)
	p := &piEnv{run: run}
	p.Env = &engine.Env{
		Config:  config.Default(),
		Root:    t.TempDir(),
		BootDir: "/boot/firmware",
		Run:     run,
		Machine: &systemtest.Machine{},
		Tools:   system.DefaultTools(),
		State:   &journal.State{},
		Now:     func() time.Time { return now },
		Sleep: func(ctx context.Context, d time.Duration) error {
			now = now.Add(d)
			return nil
		},
		Progress: func(format string, args ...any) { p.logs = append(p.logs, fmt.Sprintf(format, args...)) },
	}
	p.put(t, "/proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\x00")
	p.put(t, "/proc/meminfo", "MemTotal:        3884328 kB\nMemFree:         3000000 kB\n")
	p.put(t, "/boot/firmware/config.txt", "# For more options and information see\n[pi4]\narm_boost=1\n\n[all]\nenable_uart=1\n")
	p.put(t, "/proc/net/route", "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n")
	for _, tool := range []string{p.Tools.Vcgencmd, p.Tools.Uname} {
		p.put(t, tool, "")
	}
	return p
}

func (p *piEnv) put(t *testing.T, path, data string) {
	t.Helper()
	full := p.Path(path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (p *piEnv) remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(p.Path(path)); err != nil {
		t.Fatal(err)
	}
}

func (p *piEnv) log() string { return strings.Join(p.logs, "\n") }

// journalEvents is the card's journal as its events, space-separated.
func (p *piEnv) journalEvents(t *testing.T) string {
	t.Helper()
	j, err := journal.ReadFile(p.Path(p.BootDir))
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, e := range j.Entries {
		events = append(events, string(e.Event))
	}
	return strings.Join(events, " ")
}

// networkUp gives the root a default route and a name server.
func (p *piEnv) networkUp(t *testing.T) {
	p.put(t, "/proc/net/route", "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"+
		"eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n")
	p.put(t, "/etc/resolv.conf", "nameserver 192.168.1.1\n")
}
