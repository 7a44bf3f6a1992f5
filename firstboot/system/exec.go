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
	var stdout bytes.Buffer
	err := r.Stream(ctx, nil, &stdout, argv...)
	if ce, ok := err.(*CommandError); ok {
		ce.Stdout = stdout.String()
	}
	return stdout.Bytes(), err
}

// Stream runs argv like Output, with stdin and stdout connected to the
// command: for output too large to hold, or an *os.File to hand to the
// command as it is (nothing then passes through this process). Its error
// is a *CommandError with stderr, as Output's.
func (r ExecRunner) Stream(ctx context.Context, stdin io.Reader, stdout io.Writer, argv ...string) error {
	if len(argv) == 0 {
		return fmt.Errorf("run: empty command")
	}
	quoted := QuoteArgv(argv)
	if r.Log != nil {
		r.Log("run: " + quoted)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, &stderr
	if r.Env != nil {
		cmd.Env = append(os.Environ(), r.Env...)
	}
	if err := cmd.Run(); err != nil {
		return &CommandError{Argv: quoted, Err: err, Stderr: stderr.String()}
	}
	return nil
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
