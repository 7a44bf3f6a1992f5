package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fixture"
)

// hostileText is what a card can carry to take over the terminal that
// prints it: clear the screen, retitle the window, a C1 CSI, a bidi override.
const hostileText = "\x1b[2J\x1b]0;owned\x07 \u009b31m \u202eevil"

func assertEscaped(t *testing.T, what, out string) {
	t.Helper()
	for _, raw := range []string{"\x1b", "\x07", "\u009b", "\u202e"} {
		if strings.Contains(out, raw) {
			t.Errorf("%s prints a raw %q from the card:\n%q", what, raw, out)
		}
	}
	if !strings.Contains(out, `\x1b[2J\x1b]0;owned\x07 \u009b31m \u202eevil`) {
		t.Errorf("%s does not show the card's text escaped:\n%s", what, out)
	}
}

// report and inspect print what a card says with its control characters
// escaped; their JSON is escaped by encoding/json.
func TestCardTextIsEscaped(t *testing.T) {
	t.Parallel()
	q, err := json.Marshal(hostileText)
	if err != nil {
		t.Fatal(err)
	}
	quoted := string(q)
	jsonl := `{"v":1,"step":"target","event":"fail","time":"2026-11-25T01:00:00Z","boot":1,"msg":` + quoted + `,"hint":` + quoted + "}\n"
	img := cardImage(t, map[string][]byte{"journal.jsonl": []byte(jsonl), "install.log": []byte(hostileText + "\n"), "FAILED": []byte(hostileText + "\n")})
	code, stdout, stderr := runCLI("report", "--log", img)
	if code != exitOK {
		t.Fatalf("report: exit %d: %s", code, stderr)
	}
	assertEscaped(t, "report", stdout)
	if n := strings.Count(stdout, `\x1b[2J`); n < 4 {
		t.Errorf("report shows the journal message, hint, FAILED and install.log escaped %d times, want 4:\n%s", n, stdout)
	}

	dir := t.TempDir()
	base := writeTestFixture(t, dir, fixture.Options{})
	local := writeTestFile(t, filepath.Join(dir, "journal.jsonl"), jsonl)
	at := base.Path + "@@" + strconv.FormatInt(base.BootPart.Start, 10)
	for _, argv := range [][]string{{"mmd", "-i", at, "::/nixpi"}, {"mcopy", "-i", at, local, "::/nixpi/journal.jsonl"}} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
	}
	r := runNixpiEnv(t, nil, "inspect", base.Path)
	assertEscaped(t, "inspect", r.stdout)
	r = runNixpiEnv(t, nil, "inspect", "--json", base.Path)
	for _, raw := range []string{"\x1b", "\x07"} {
		if strings.Contains(r.stdout, raw) {
			t.Errorf("inspect --json prints a raw %q", raw)
		}
	}
}

// TestBadInputCorpus is the bad-input corpus of the commands that read
// (config check, inspect, report), one case per kind of hostile or broken
// input: each exits as it should, says what is wrong, prints no secret,
// leaves no file behind and changes no input. build's corpus is
// TestBuildBadInput, eeprom's TestEepromErrors and TestEepromOutRules.
func TestBadInputCorpus(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	base := writeTestFixture(t, src, fixture.Options{})
	good, err := os.ReadFile(base.Path)
	if err != nil {
		t.Fatal(err)
	}
	exfat, err := exFATVariant(src, good, base)
	if err != nil {
		t.Fatal(err)
	}
	gpt := writeTestFixture(t, t.TempDir(), fixture.Options{Table: fixture.TableGPT})
	noise := make([]byte, 8192)
	for i := range noise {
		noise[i] = byte(i*131) ^ byte(i>>5)
	}
	randomJournal := cardImage(t, map[string][]byte{"journal.jsonl": noise})
	q, err := json.Marshal(hostileText)
	if err != nil {
		t.Fatal(err)
	}
	hostileJournal := cardImage(t, map[string][]byte{"journal.jsonl": []byte(`{"v":1,"step":"target","event":"fail","time":"2026-11-25T01:00:00Z","boot":1,"msg":` + string(q) + "}\n")})
	secretConfig := buildTestConfig + "[system]\ntimezone = \"Europe/Atlantis\"\n"

	for _, c := range []struct {
		name  string
		input string // copied into the case's directory as "input"; special names below
		args  []string
		code  int
		want  []string
	}{
		{"config is a character device", "/dev/zero", []string{"config", "check", "INPUT"}, 1, []string{"character device", "not a regular file"}},
		{"config is a FIFO", "FIFO", []string{"config", "check", "INPUT"}, 1, []string{"is a FIFO"}},
		{"config too large", "HUGE-CONFIG", []string{"config", "check", "INPUT"}, 1, []string{"is too large", "at most 1 MiB"}},
		{"config unknown timezone, with secrets", "SECRET-CONFIG", []string{"config", "check", "INPUT"}, 1, []string{"input:", "not in the IANA tz database"}},
		{"config with terminal escapes", "ESCAPE-CONFIG", []string{"config", "check", "INPUT"}, 1, []string{`\x1b[2J`}},
		{"inspect empty file", "EMPTY", []string{"inspect", "INPUT"}, 1, []string{"is empty: not a card image"}},
		{"inspect /dev/null", "/dev/null", []string{"inspect", "INPUT"}, 1, []string{`"/dev/null" is a character device`}},
		{"inspect FIFO", "FIFO", []string{"inspect", "INPUT"}, 1, []string{"is a FIFO"}},
		{"inspect exFAT boot partition", exfat, []string{"inspect", "INPUT"}, 1, []string{"is not a usable card", "exFAT, not FAT32"}},
		{"inspect GPT", gpt.Path, []string{"inspect", "INPUT"}, 1, []string{"is not a usable card: GPT partition table"}},
		{"report empty file", "EMPTY", []string{"report", "INPUT"}, 1, []string{"is empty"}},
		{"report /dev/null", "/dev/null", []string{"report", "INPUT"}, 1, []string{"character device"}},
		{"report FIFO", "FIFO", []string{"report", "INPUT"}, 1, []string{"is a FIFO"}},
		{"report random journal", randomJournal, []string{"report", "INPUT"}, 1, []string{"damaged or not a nixpi journal"}},
		{"report hostile journal", hostileJournal, []string{"report", "INPUT"}, 0, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			input := filepath.Join(dir, "input")
			switch c.input {
			case "/dev/zero", "/dev/null":
				input = c.input
			case "FIFO":
				mkfifo(t, input)
			case "EMPTY":
				writeTestFile(t, input, "")
			case "HUGE-CONFIG":
				writeTestFile(t, input, secretConfig+strings.Repeat("#", 2<<20))
			case "SECRET-CONFIG":
				writeTestFile(t, input, secretConfig)
			case "ESCAPE-CONFIG":
				writeTestFile(t, input, buildTestConfig+"[system]\nhostname = \""+strings.NewReplacer("\x1b", `\u001b`, "\x07", `\u0007`).Replace(hostileText)+"\"\n")
			default:
				copyFileSparse(t, c.input, input)
			}
			var sum string
			if st, err := os.Stat(input); err == nil && st.Mode().IsRegular() {
				sum = buildertest.FileSHA256(t, input)
			}
			before := dirNames(t, dir)
			args := make([]string, len(c.args))
			for i, a := range c.args {
				args[i] = strings.ReplaceAll(a, "INPUT", input)
			}
			r := runNixpiEnv(t, nil, args...)
			if r.code != c.code {
				t.Errorf("exit %d, want %d\nstdout %s\nstderr %s", r.code, c.code, r.stdout, r.stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			assertNoSecret(t, r.stdout+r.stderr)
			for _, raw := range []string{"\x1b", "\x07", "\u009b", "\u202e"} {
				if strings.Contains(r.stdout+r.stderr, raw) {
					t.Errorf("output carries a raw %q", raw)
				}
			}
			assertNoOutput(t, dir, before)
			if sum != "" && buildertest.FileSHA256(t, input) != sum {
				t.Errorf("%s changed", input)
			}
		})
	}
}
