package system

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
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
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout = &stdout
	pipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, &CommandError{Argv: quoted, Err: err}
	}
	if err := cmd.Start(); err != nil {
		return nil, &CommandError{Argv: quoted, Err: err}
	}
	var tail []byte
	sc := bufio.NewScanner(pipe)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		stderrLine(line)
		tail = append(tail, line...)
		tail = append(tail, '\n')
		if len(tail) > 2*stderrTail {
			tail = append([]byte(nil), tail[len(tail)-stderrTail:]...)
		}
	}
	scanErr := sc.Err()
	if scanErr != nil {
		// Keep the pipe drained so the command is not blocked writing.
		_, _ = io.Copy(io.Discard, pipe)
	}
	err = cmd.Wait()
	if err == nil {
		err = scanErr
	}
	if len(tail) > stderrTail {
		tail = tail[len(tail)-stderrTail:]
	}
	if err != nil {
		return stdout.Bytes(), &CommandError{Argv: quoted, Err: err, Stdout: stdout.String(), Stderr: string(tail)}
	}
	return stdout.Bytes(), nil
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
