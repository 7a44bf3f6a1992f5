package system

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// ExecRunner runs commands for real. Log, when set, receives every quoted
// argv before it runs.
type ExecRunner struct {
	Log func(line string)
}

// Output implements Runner.
func (r ExecRunner) Output(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("run: empty command")
	}
	quoted := QuoteArgv(argv)
	if r.Log != nil {
		r.Log("run: " + quoted)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), &CommandError{Argv: quoted, Err: err, Stdout: stdout.String(), Stderr: stderr.String()}
	}
	return stdout.Bytes(), nil
}

// stderrTail bounds the stderr a streamed command's error keeps: a build
// log can be gigabytes, its last lines say what went wrong.
const stderrTail = 16 << 10

// streamWaitDelay bounds how long Stream waits for stderr to close once the
// command is gone: a child it left behind may hold the pipe open.
const streamWaitDelay = 5 * time.Second

// Stream implements Streamer: like Output, with each stderr line handed to
// stderrLine as it arrives. The error carries the last 16 KiB of stderr.
func (r ExecRunner) Stream(ctx context.Context, stderrLine func(line string), argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("run: empty command")
	}
	quoted := QuoteArgv(argv)
	if r.Log != nil {
		r.Log("run: " + quoted)
	}
	var stdout bytes.Buffer
	lines := &lineWriter{each: stderrLine}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout = &stdout
	cmd.Stderr = lines
	cmd.WaitDelay = streamWaitDelay
	err := cmd.Run()
	lines.flush()
	if err != nil {
		return stdout.Bytes(), &CommandError{Argv: quoted, Err: err, Stdout: stdout.String(), Stderr: string(lines.tail)}
	}
	return stdout.Bytes(), nil
}

// lineWriter calls each with every complete line written to it and keeps
// the last stderrTail bytes. exec.Cmd writes to it from one goroutine.
type lineWriter struct {
	each    func(string)
	partial []byte
	tail    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.tail = append(w.tail, p...)
	if len(w.tail) > 2*stderrTail {
		w.tail = append([]byte(nil), w.tail[len(w.tail)-stderrTail:]...)
	}
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.each(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	return len(p), nil
}

func (w *lineWriter) flush() {
	if len(w.partial) > 0 {
		w.each(string(w.partial))
		w.partial = nil
	}
	if len(w.tail) > stderrTail {
		w.tail = w.tail[len(w.tail)-stderrTail:]
	}
}

// CommandError is a command that failed, with what it printed.
type CommandError struct {
	Argv   string
	Err    error
	Stdout string
	Stderr string
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%s: %v", e.Argv, e.Err)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": stderr: " + s
	}
	if s := strings.TrimSpace(e.Stdout); s != "" {
		msg += ": stdout: " + s
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }

// QuoteArgv renders argv so it can be pasted into a shell.
func QuoteArgv(argv []string) string {
	parts := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r == '/' || r == '-' || r == '_' || r == '.' || r == '=' || r == ':' || r == ',' || r == '@' || r == '+' ||
				(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'))
		}) < 0 {
			parts[i] = a
		} else {
			parts[i] = strconv.Quote(a)
		}
	}
	return strings.Join(parts, " ")
}
