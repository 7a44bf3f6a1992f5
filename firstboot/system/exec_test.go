package system

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

func TestExecRunnerLogsAndReportsOutput(t *testing.T) {
	t.Parallel()
	var logged []string
	r := ExecRunner{Log: func(line string) { logged = append(logged, line) }}
	out, err := r.Output(context.Background(), "/bin/sh", "-c", "echo hello")
	if err != nil || string(out) != "hello\n" {
		t.Fatalf("Output = %q, %v", out, err)
	}
	_, err = r.Output(context.Background(), "/bin/sh", "-c", "echo partial; echo broken >&2; exit 3")
	var ce *CommandError
	var ee *exec.ExitError
	if !errors.As(err, &ce) || !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("failure = %v", err)
	}
	if want := `/bin/sh -c "echo partial; echo broken >&2; exit 3": exit status 3: stderr: broken: stdout: partial`; err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}
	if len(logged) != 2 || logged[0] != `run: /bin/sh -c "echo hello"` {
		t.Errorf("logged = %q", logged)
	}
	if _, err := r.Output(context.Background()); err == nil {
		t.Error("empty argv accepted")
	}
}

func TestQuoteArgv(t *testing.T) {
	t.Parallel()
	got := QuoteArgv([]string{"/usr/sbin/sgdisk", "--new=1:2048:+500M", "-c", "1:EFI system", ""})
	if want := `/usr/sbin/sgdisk --new=1:2048:+500M -c "1:EFI system" ""`; got != want {
		t.Errorf("QuoteArgv = %q, want %q", got, want)
	}
	if strings.Contains(QuoteArgv([]string{"a'b"}), "'b") && !strings.Contains(QuoteArgv([]string{"a'b"}), `"`) {
		t.Error("a quote character left unquoted")
	}
}

func TestExecRunnerStreamsStderrLines(t *testing.T) {
	t.Parallel()
	var logged, lines []string
	r := ExecRunner{Log: func(line string) { logged = append(logged, line) }}
	out, err := r.Stream(context.Background(), func(l string) { lines = append(lines, l) },
		"/bin/sh", "-c", "echo one >&2; echo result; echo two >&2")
	if err != nil || string(out) != "result\n" {
		t.Fatalf("Stream = %q, %v", out, err)
	}
	if len(lines) != 2 || lines[0] != "one" || lines[1] != "two" {
		t.Errorf("stderr lines = %q", lines)
	}
	if len(logged) != 1 || logged[0] != `run: /bin/sh -c "echo one >&2; echo result; echo two >&2"` {
		t.Errorf("logged = %q", logged)
	}
	_, err = r.Stream(context.Background(), func(string) {}, "/bin/sh", "-c", "echo dying >&2; exit 137")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 137 || !strings.Contains(err.Error(), "stderr: dying") {
		t.Errorf("failure = %v", err)
	}
}
