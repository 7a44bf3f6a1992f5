package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

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
