// Package systemtest holds test doubles for package system: a Runner that
// records every argv and answers from a script, a Machine that records
// reboots instead of rebooting, and a golden-file helper for recorded argv.
// They stand in for the outside world only in tests; a step under test still
// runs all its own logic.
package systemtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nixpi/nixpi/firstboot/system"
)

// Reply is the scripted result of a command whose argv starts with Prefix.
type Reply struct {
	Prefix []string
	Stdout string
	// Stderr and ExitCode make the command fail when ExitCode != 0. Stream
	// hands Stderr to its caller line by line, failing or not.
	Stderr   string
	ExitCode int
	// Times limits how often this reply is used (0: always); once used up the
	// next matching reply applies, so a test can script "fails, then works".
	Times int
	used  int
}

// Runner records argv and answers from its replies. The longest matching
// prefix wins; among equal lengths the first added. A command with no
// matching reply fails, so an unexpected command is noticed.
type Runner struct {
	mu      sync.Mutex
	replies []*Reply
	calls   [][]string
	// OnRun, when set, is called with every argv after it is recorded (to
	// create the files a real command would).
	OnRun func(argv []string)
}

// On scripts stdout for commands starting with prefix and returns the reply
// for further tuning.
func (r *Runner) On(stdout string, prefix ...string) *Reply {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := &Reply{Prefix: prefix, Stdout: stdout}
	r.replies = append(r.replies, rep)
	return rep
}

// Set replaces the replies for exactly prefix with one that answers
// stdout: the machine changed (a bootloader flashed), so the command's
// answer did too.
func (r *Runner) Set(stdout string, prefix ...string) *Reply {
	r.mu.Lock()
	kept := r.replies[:0]
	for _, rep := range r.replies {
		if !slices.Equal(rep.Prefix, prefix) {
			kept = append(kept, rep)
		}
	}
	r.replies = kept
	r.mu.Unlock()
	return r.On(stdout, prefix...)
}

// Fail scripts a failure (exit code and stderr) for commands starting with prefix.
func (r *Runner) Fail(exitCode int, stderr string, prefix ...string) *Reply {
	rep := r.On("", prefix...)
	rep.ExitCode = exitCode
	rep.Stderr = stderr
	return rep
}

// ExitError is the error a scripted failure wraps.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// ExitCode is the scripted exit status, as exec.ExitError reports it.
func (e *ExitError) ExitCode() int { return e.Code }

// Output implements system.Runner.
func (r *Runner) Output(ctx context.Context, argv ...string) ([]byte, error) {
	return r.run(ctx, nil, argv)
}

// Stream implements system.Streamer: the reply's Stderr, line by line, then
// what Output would return.
func (r *Runner) Stream(ctx context.Context, stderrLine func(line string), argv ...string) ([]byte, error) {
	return r.run(ctx, stderrLine, argv)
}

func (r *Runner) run(ctx context.Context, stderrLine func(string), argv []string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("run: empty command")
	}
	r.mu.Lock()
	r.calls = append(r.calls, append([]string(nil), argv...))
	var best *Reply
	for _, rep := range r.replies {
		if rep.Times > 0 && rep.used >= rep.Times {
			continue
		}
		if hasPrefix(argv, rep.Prefix) && (best == nil || len(rep.Prefix) > len(best.Prefix)) {
			best = rep
		}
	}
	if best != nil {
		best.used++
	}
	onRun := r.OnRun
	r.mu.Unlock()
	if onRun != nil {
		onRun(argv)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	quoted := system.QuoteArgv(argv)
	if best == nil {
		return nil, &system.CommandError{Argv: quoted, Err: errors.New("systemtest: no scripted reply for this command")}
	}
	if stderrLine != nil && best.Stderr != "" {
		for _, line := range strings.Split(strings.TrimSuffix(best.Stderr, "\n"), "\n") {
			stderrLine(line)
		}
	}
	if best.ExitCode != 0 {
		return []byte(best.Stdout), &system.CommandError{Argv: quoted, Err: &ExitError{best.ExitCode}, Stdout: best.Stdout, Stderr: best.Stderr}
	}
	return []byte(best.Stdout), nil
}

func hasPrefix(argv, prefix []string) bool {
	if len(prefix) > len(argv) {
		return false
	}
	for i, p := range prefix {
		if argv[i] != p {
			return false
		}
	}
	return true
}

// Calls returns a copy of every argv run so far.
func (r *Runner) Calls() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][]string, len(r.calls))
	for i, c := range r.calls {
		out[i] = append([]string(nil), c...)
	}
	return out
}

// Transcript is every argv run so far, quoted, one per line.
func (r *Runner) Transcript() string {
	var b strings.Builder
	for _, c := range r.Calls() {
		b.WriteString(system.QuoteArgv(c))
		b.WriteByte('\n')
	}
	return b.String()
}

// Machine records reboot requests; the host never reboots in a test.
type Machine struct {
	mu       sync.Mutex
	reboots  int
	tryboots int
	syncs    int
	// Err, when set, is returned by Reboot.
	Err error
}

// Reboot implements system.Machine.
func (m *Machine) Reboot(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Err != nil {
		return m.Err
	}
	m.reboots++
	return nil
}

// TryReboot implements system.Machine: it counts, as Reboot does.
func (m *Machine) TryReboot(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Err != nil {
		return m.Err
	}
	m.tryboots++
	return nil
}

// TryReboots is how many reboots into TRYBOOT mode were requested.
func (m *Machine) TryReboots() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tryboots
}

// Sync implements system.Machine: it only counts.
func (m *Machine) Sync(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.syncs++
	return nil
}

// Syncs is how many times the filesystems were to be synced.
func (m *Machine) Syncs() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.syncs
}

// Reboots is how many reboots were requested.
func (m *Machine) Reboots() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reboots
}

// UpdateEnv names the environment variable that makes Golden rewrite its
// files instead of comparing: NIXPI_UPDATE_GOLDEN=1 go test ./...
const UpdateEnv = "NIXPI_UPDATE_GOLDEN"

// Golden compares got with the file testdata/<name> next to the test, or
// rewrites that file when NIXPI_UPDATE_GOLDEN=1.
func Golden(t testing.TB, name string, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if os.Getenv(UpdateEnv) == "1" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file: %v (create it with %s=1 go test)", err, UpdateEnv)
	}
	if string(want) != got {
		t.Errorf("output differs from %s (rerun with %s=1 to accept):\n--- want\n%s--- got\n%s", path, UpdateEnv, want, got)
	}
}
