package steps

// Running Nix with --log-format internal-json: its stderr is one event per
// line, "@nix " and a JSON object (Nix's src/libutil/logging.cc), read as it
// arrives so the console shows paths fetched / to fetch and MiB instead of a
// silent half hour.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/system"
)

// Activity and result types of Nix's logger (src/libutil/logging.hh).
const (
	actFileTransfer = 101
	actCopyPaths    = 103
	actBuilds       = 104
	resProgress     = 105
	resSetExpected  = 106
	resBuildLogLine = 101
)

// nixProgressEvery is how often a long Nix command's progress is shown at
// most; nixHeartbeat how often at least (evaluating NixOS on a Pi prints
// nothing for minutes).
const (
	nixProgressEvery = 15 * time.Second
	nixHeartbeat     = time.Minute
)

type nixEvent struct {
	Action string            `json:"action"`
	ID     uint64            `json:"id"`
	Level  int               `json:"level"`
	Type   int               `json:"type"`
	Msg    string            `json:"msg"`
	Fields []json.RawMessage `json:"fields"`
}

// nixProgress folds Nix's events into what a person at the Pi wants to
// know, and keeps the messages that explain a failure.
type nixProgress struct {
	acts              map[uint64]int   // activity id → type
	transferred       map[uint64]int64 // file transfer id → bytes done
	paths, pathsTotal int64
	builds, buildsAll int64
	bytesTotal        int64
	errors            []string // level 0 messages and non-JSON lines, last few
	buildLog          []string // last build log lines
}

func newNixProgress() *nixProgress {
	return &nixProgress{acts: map[uint64]int{}, transferred: map[uint64]int64{}}
}

func field(fs []json.RawMessage, i int) int64 {
	if i >= len(fs) {
		return 0
	}
	var n int64
	_ = json.Unmarshal(fs[i], &n)
	return n
}

func keepLast(s []string, line string, n int) []string {
	s = append(s, line)
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// line takes one stderr line; it returns a warning worth showing, if any.
func (p *nixProgress) line(l string) (warning string) {
	raw, ok := strings.CutPrefix(l, "@nix ")
	var ev nixEvent
	if !ok || json.Unmarshal([]byte(raw), &ev) != nil {
		if strings.TrimSpace(l) != "" {
			p.errors = keepLast(p.errors, l, 20)
		}
		return ""
	}
	switch ev.Action {
	case "start":
		p.acts[ev.ID] = ev.Type
	case "stop":
		delete(p.acts, ev.ID)
	case "msg":
		switch {
		case ev.Level == 0:
			p.errors = keepLast(p.errors, ev.Msg, 20)
		case ev.Level == 1:
			return ev.Msg
		}
	case "result":
		switch ev.Type {
		case resProgress:
			switch p.acts[ev.ID] {
			case actCopyPaths:
				p.paths, p.pathsTotal = field(ev.Fields, 0), field(ev.Fields, 1)
			case actBuilds:
				p.builds, p.buildsAll = field(ev.Fields, 0), field(ev.Fields, 1)
			case actFileTransfer:
				p.transferred[ev.ID] = field(ev.Fields, 0)
			}
		case resSetExpected:
			if field(ev.Fields, 0) == actFileTransfer {
				p.bytesTotal = field(ev.Fields, 1)
			}
		case resBuildLogLine:
			var s string
			if len(ev.Fields) > 0 && json.Unmarshal(ev.Fields[0], &s) == nil {
				p.buildLog = keepLast(p.buildLog, s, 10)
			}
		}
	}
	return ""
}

func (p *nixProgress) bytesDone() int64 {
	var n int64
	for _, b := range p.transferred {
		n += b
	}
	return n
}

// summary is "120 of 850 paths fetched, 310 of 1200 MiB downloaded, 2 of 3 built".
func (p *nixProgress) summary() string {
	parts := []string{fmt.Sprintf("%d of %d paths fetched", p.paths, p.pathsTotal)}
	if p.bytesTotal > 0 || p.bytesDone() > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d MiB downloaded", p.bytesDone()>>20, max(p.bytesTotal, p.bytesDone())>>20))
	}
	if p.buildsAll > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d built", p.builds, p.buildsAll))
	}
	return strings.Join(parts, ", ")
}

// errOutOfMemory is a Nix run the kernel killed for memory (or that said so).
var errOutOfMemory = errors.New("out of memory")

// outOfMemory: exit status 137 or death by SIGKILL (what the OOM killer
// sends), or a message that says so. A cancelled context (shutdown) also
// kills with SIGKILL: runNix checks that first.
func outOfMemory(err error, msgs []string) bool {
	var coded interface{ ExitCode() int }
	if errors.As(err, &coded) && coded.ExitCode() == 137 {
		return true
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
	}
	for _, m := range msgs {
		low := strings.ToLower(m)
		// "failed due to signal 9 (Killed)": a builder the OOM killer took.
		if strings.Contains(low, "out of memory") || strings.Contains(low, "bad_alloc") || strings.Contains(low, "cannot allocate memory") || strings.Contains(low, "signal 9") {
			return true
		}
	}
	return false
}

// runNix runs a Nix command that logs in internal-json, showing progress
// under what ("building the system") at most every nixProgressEvery. The
// error carries Nix's own error messages (not the raw JSON log) and wraps
// errOutOfMemory when the kernel killed it.
func runNix(ctx context.Context, env *engine.Env, what string, argv []string) (string, *nixProgress, error) {
	streamer, ok := env.Run.(system.Streamer)
	if !ok {
		return "", nil, fmt.Errorf("%s: the runner (%T) cannot stream Nix's log", what, env.Run)
	}
	p := newNixProgress()
	// The stream callback and the heartbeat both report: one at a time.
	var mu sync.Mutex
	var last time.Time
	var shown string
	stop, stopped := make(chan struct{}), make(chan struct{})
	beat := time.NewTicker(nixHeartbeat)
	defer beat.Stop()
	go func() {
		defer close(stopped)
		start := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-beat.C:
				mu.Lock()
				state := "evaluating"
				if p.pathsTotal+p.buildsAll > 0 {
					state = p.summary()
				}
				env.Logf("%s: %s, %s so far", what, state, time.Since(start).Round(time.Minute))
				mu.Unlock()
			}
		}
	}()
	out, err := streamer.Stream(ctx, func(l string) {
		mu.Lock()
		defer mu.Unlock()
		if w := p.line(l); w != "" {
			env.Logf("%s: %s", what, strings.TrimSpace(w))
		}
		now := env.Clock()
		if s := p.summary(); p.pathsTotal+p.buildsAll > 0 && s != shown && (last.IsZero() || now.Sub(last) >= nixProgressEvery) {
			env.Logf("%s: %s", what, s)
			last, shown = now, s
		}
	}, argv...)
	close(stop)
	<-stopped
	if err == nil {
		return string(out), p, nil
	}
	if ctx.Err() != nil {
		// Stopped (shutdown): its SIGKILL is not the OOM killer's.
		return "", p, fmt.Errorf("%s: %w", what, ctx.Err())
	}
	detail := strings.Join(p.errors, "; ")
	if len(p.buildLog) > 0 {
		detail += "; last build output: " + strings.Join(p.buildLog, " | ")
	}
	exit := err.Error()
	var ce *system.CommandError
	if errors.As(err, &ce) {
		// Not the raw JSON log: what Nix said, and how it ended.
		exit = fmt.Sprintf("%s: %v", ce.Argv, ce.Err)
	}
	if outOfMemory(err, p.errors) {
		return "", p, fmt.Errorf("%s: %w (%s: %s)", what, errOutOfMemory, exit, detail)
	}
	if detail == "" {
		return "", p, fmt.Errorf("%s: %w", what, err)
	}
	return "", p, fmt.Errorf("%s: %s: %s", what, exit, detail)
}

// lastStorePath is the last /nix/store line of a --print-out-paths output.
func lastStorePath(out string) string {
	lines := strings.Fields(out)
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "/nix/store/") {
			return lines[i]
		}
	}
	return ""
}
