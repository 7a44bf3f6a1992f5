package steps

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/firstboot/config"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/system/systemtest"
)

func TestPreflightHealthyPi4(t *testing.T) {
	t.Parallel()
	p := newPiEnv(t)
	p.run.On("throttled=0x0\n", p.Tools.Vcgencmd, "get_throttled")
	p.run.On("2023/01/11 17:40:52\nversion 8ba17717fbcedd4c3b6d4bce7e50c7af4155cba9 (release)\ntimestamp 1673458852\n", p.Tools.Vcgencmd, "bootloader_version")
	p.run.On("armv7l\n", p.Tools.Uname, "-m")
	step := NewPreflight()
	if done, _, err := step.Probe(context.Background(), p.Env); done || err != nil {
		t.Fatalf("Probe = %v, %v; preflight runs every boot", done, err)
	}
	if err := step.Run(context.Background(), p.Env); err != nil {
		t.Fatalf("Run: %v\n%s", err, p.log())
	}
	if p.State.RAMBytes != 3884328<<10 {
		t.Errorf("RAMBytes = %d", p.State.RAMBytes)
	}
	systemtest.Golden(t, "preflight-pi4.argv", p.run.Transcript())
	for _, want := range []string{
		"ok       model      Raspberry Pi 4 Model B Rev 1.4",
		"ok       memory     3793 MiB of memory, swap ram",
		"ok       power      no under-voltage",
		"ok       bootloader EEPROM bootloader 2023/01/11 17:40:52",
		"ok       kernel     32-bit kernel (armv7l): the arm64 step switches",
		"ok       network    not up yet (no default route)",
	} {
		if !strings.Contains(p.log(), want) {
			t.Errorf("log lacks %q:\n%s", want, p.log())
		}
	}
}

func TestPreflightBlockingProblems(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		setup     func(t *testing.T, p *piEnv)
		throttled string
		arch      string
		wantErr   []string // empty: no error
		wantHint  string
	}{
		{
			name: "under-voltage now", throttled: "throttled=0x50005",
			wantErr: []string{"power: under-voltage right now (throttled=0x50005)"}, wantHint: "power supply",
		},
		{
			name: "under-voltage earlier is a warning", throttled: "throttled=0x50000",
		},
		{
			name: "pi 3",
			setup: func(t *testing.T, p *piEnv) {
				p.put(t, "/proc/device-tree/model", "Raspberry Pi 3 Model B Plus Rev 1.3\x00")
			},
			wantErr: []string{"model: Raspberry Pi 3 Model B Plus Rev 1.3 is not supported"}, wantHint: "Raspberry Pi 4",
		},
		{
			name:    "512 MB",
			setup:   func(t *testing.T, p *piEnv) { p.put(t, "/proc/meminfo", "MemTotal:  444000 kB\n") },
			wantErr: []string{"memory: 433 MiB of memory"}, wantHint: "1 GB",
		},
		{
			name: "1 GB without swap",
			setup: func(t *testing.T, p *piEnv) {
				p.put(t, "/proc/meminfo", "MemTotal:  940000 kB\n")
				p.Config.Layout.SwapSize = config.SwapSize{}
			},
			wantErr: []string{"917 MiB of memory plus 0 of swap is below 1536 MiB"}, wantHint: `swap_size = "ram"`,
		},
		{
			name:  "1 GB with swap the size of RAM",
			setup: func(t *testing.T, p *piEnv) { p.put(t, "/proc/meminfo", "MemTotal:  940000 kB\n") },
		},
		{
			name: "x86 kernel", arch: "x86_64",
			wantErr: []string{`kernel: kernel architecture "x86_64" is not ARM`},
		},
		{
			name: "two problems at once", throttled: "throttled=0x1", arch: "x86_64",
			wantErr: []string{"2 blocking problem(s)", "under-voltage", "x86_64"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := newPiEnv(t)
			if c.setup != nil {
				c.setup(t, p)
			}
			if c.throttled == "" {
				c.throttled = "throttled=0x0"
			}
			if c.arch == "" {
				c.arch = "aarch64"
			}
			p.run.On(c.throttled+"\n", p.Tools.Vcgencmd, "get_throttled")
			p.run.On("2024/05/17 15:30:58\n", p.Tools.Vcgencmd, "bootloader_version")
			p.run.On(c.arch+"\n", p.Tools.Uname, "-m")
			err := NewPreflight().Run(context.Background(), p.Env)
			if len(c.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Run: no error; log:\n%s", p.log())
			}
			for _, w := range c.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if !strings.Contains(engine.HintOf(err), c.wantHint) {
				t.Errorf("hint %q lacks %q", engine.HintOf(err), c.wantHint)
			}
		})
	}
}

func TestPreflightUnderQEMUOnlyWarns(t *testing.T) {
	t.Parallel()
	p := newPiEnv(t)
	p.remove(t, "/proc/device-tree/model")
	p.remove(t, p.Tools.Vcgencmd)
	p.networkUp(t)
	p.Now = func() time.Time { return time.Date(1970, 1, 1, 0, 0, 10, 0, time.UTC) }
	p.run.On("aarch64\n", p.Tools.Uname, "-m")
	if err := NewPreflight().Run(context.Background(), p.Env); err != nil {
		t.Fatalf("Run: %v\n%s", err, p.log())
	}
	systemtest.Golden(t, "preflight-qemu.argv", p.run.Transcript())
	for _, want := range []string{
		"warning  model      not a Raspberry Pi (no device-tree model)",
		"warning  clock      the clock says 1970-01-01T00:00:10Z",
		"ok       network    default route via eth0",
	} {
		if !strings.Contains(p.log(), want) {
			t.Errorf("log lacks %q:\n%s", want, p.log())
		}
	}
	if strings.Contains(p.log(), "power") {
		t.Errorf("power checked off a Pi:\n%s", p.log())
	}
}
