package system

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// ExecRunner runs commands for real. Log, when set, receives every quoted
// argv before it runs. Env, when set, is added to every command's
// environment (e.g. LC_ALL=C where stderr is matched).
type ExecRunner struct {
	Log func(line string)
	Env []string
}

// Output implements Runner.
func (r ExecRunner) Output(ctx context.Context, argv ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	err := r.run(ctx, nil, &stdout, &stderr, argv)
	return stdout.Bytes(), r.commandError(err, argv, stdout.String(), stderr.String())
}

// Pipe runs argv like Output, with stdin and stdout connected to the
// command: for output too large to hold, or an *os.File to hand to the
// command as it is (nothing then passes through this process). Its error
// is a *CommandError with stderr, as Output's.
func (r ExecRunner) Pipe(ctx context.Context, stdin io.Reader, stdout io.Writer, argv ...string) error {
	var stderr bytes.Buffer
	err := r.run(ctx, stdin, stdout, &stderr, argv)
	return r.commandError(err, argv, "", stderr.String())
}

// stderrTail bounds the stderr a streamed command's error keeps: a build
// log can be gigabytes, its last lines say what went wrong.
const stderrTail = 16 << 10

// Stream implements Streamer: like Output, with each stderr line handed to
// stderrLine as it arrives. The error carries the last 16 KiB of stderr.
func (r ExecRunner) Stream(ctx context.Context, stderrLine func(line string), argv ...string) ([]byte, error) {
	var stdout bytes.Buffer
	lines := &lineWriter{each: stderrLine}
	err := r.run(ctx, nil, &stdout, lines, argv)
	lines.flush()
	return stdout.Bytes(), r.commandError(err, argv, stdout.String(), string(lines.tail))
}

// waitDelay bounds how long a command's stdout and stderr are read once it
// is gone: a child it left behind may hold the pipes open.
const waitDelay = 5 * time.Second

// run logs the quoted argv and runs it with the given streams and r.Env.
func (r ExecRunner) run(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, argv []string) error {
	if len(argv) == 0 {
		return fmt.Errorf("run: empty command")
	}
	if r.Log != nil {
		r.Log("run: " + QuoteArgv(argv))
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.WaitDelay = waitDelay
	if r.Env != nil {
		cmd.Env = append(os.Environ(), r.Env...)
	}
	return cmd.Run()
}

// commandError wraps a failed run with what the command printed; nil stays
// nil, and an error from before the start (empty argv) stays as it is.
func (r ExecRunner) commandError(err error, argv []string, stdout, stderr string) error {
	if err == nil || len(argv) == 0 {
		return err
	}
	return &CommandError{Argv: QuoteArgv(argv), Err: err, Stdout: stdout, Stderr: stderr}
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
