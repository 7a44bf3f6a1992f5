package steps

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/system"
)

// runNix with the real runner: a process killed by SIGKILL (what the OOM
// killer does) is out of memory; one killed because the service is stopping
// is not.
func TestNixRunKilledIsOutOfMemoryUnlessStopping(t *testing.T) {
	t.Parallel()
	env := &engine.Env{Run: system.ExecRunner{}, Progress: func(string, ...any) {}}
	_, _, err := runNix(context.Background(), env, "system", []string{"/bin/sh", "-c", `echo '@nix {"action":"msg","level":0,"msg":"error: evaluating"}' >&2; kill -9 $$`})
	if !errors.Is(err, errOutOfMemory) || !strings.Contains(err.Error(), "signal: killed") || !strings.Contains(err.Error(), "error: evaluating") {
		t.Fatalf("SIGKILL: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, _, err = runNix(ctx, env, "system", []string{"/bin/sh", "-c", "exec sleep 10"})
	if errors.Is(err, errOutOfMemory) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stopped: %v", err)
	}
}

func TestNixProgressIgnoresNoise(t *testing.T) {
	t.Parallel()
	p := newNixProgress()
	for _, l := range []string{"@nix {not json", "plain stderr line", `@nix {"action":"result","id":99,"type":105,"fields":[1,2,0,0]}`} {
		p.line(l)
	}
	if p.paths != 0 || len(p.errors) != 2 {
		t.Errorf("progress %+v", p)
	}
}
