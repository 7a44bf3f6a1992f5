package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/nixpi/nixpi/builder"
	"github.com/nixpi/nixpi/builder/buildertest"
	"github.com/nixpi/nixpi/builder/fixture"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/retire"
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

// hostileStrings are the ways untrusted text attacks a terminal, each sent
// through every command below: ANSI escapes (clear, retitle), a carriage
// return that overwrites the line, a NUL, a line break before a fake last
// line, invalid UTF-8, a bidi override and a C1 CSI.
var hostileStrings = []string{
	"\x1b[2J\x1b]0;owned\x07",
	"safe\roverwritten",
	"nul\x00byte",
	"busy\nINSTALL COMPLETE: NixOS runs from the SSD",
	"bad \xff\xfe utf-8",
	"\u202eevil",
	"c1 \u009b31m",
}

// hostileAll is every hostile string in one; hostileUTF8 those a config,
// which must be UTF-8 text, can hold.
var (
	hostileAll  = strings.Join(hostileStrings, " ")
	hostileUTF8 = strings.ReplaceAll(hostileAll, "\xff\xfe", "")
)

// assertNoRawHostile checks that none of hostileStrings reaches out raw: no
// control byte, no invalid UTF-8, no bidi or C1 control, and no line that
// starts with the fake one. Text after fileFrom (a file shown as it is,
// after its header) may hold lines of its own.
func assertNoRawHostile(t *testing.T, what, out, fileFrom string) {
	t.Helper()
	assertNoRawBytes(t, what, out)
	lines := out
	if fileFrom != "" {
		lines, _, _ = strings.Cut(out, fileFrom)
	}
	for _, line := range strings.Split(lines, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "INSTALL COMPLETE") {
			t.Errorf("%s prints a fake line from the card: %q", what, line)
		}
	}
}

// assertNoRawBytes is assertNoRawHostile for a file shown whole (report
// --json, eeprom config), whose lines are the file's.
func assertNoRawBytes(t *testing.T, what, out string) {
	t.Helper()
	for _, raw := range []string{"\x1b", "\x07", "\r", "\x00", "\xff", "\u202e", "\u009b"} {
		if strings.Contains(out, raw) {
			t.Errorf("%s prints a raw %q:\n%q", what, raw, out)
		}
	}
}

// tomlString writes s as a TOML basic string, control characters escaped
// as TOML spells them, so the file carries what the escapes decode to; an
// invalid UTF-8 byte, which no escape writes, stays raw.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			b.WriteByte(s[i])
		case r == '"' || r == '\\':
			b.WriteString(`\` + string(r))
		case r < 0x20 || (r >= 0x7f && r < 0xa0) || (r >= 0x2000 && r < 0x2100):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String() + `"`
}

// openPTY opens a pseudo-terminal in raw mode (no \n to \r\n) and collects
// what is written to its slave; done closes the slave and returns that.
func openPTY(t *testing.T) (slave *os.File, done func() string) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlock pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("pseudo-terminal number: %v", err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pseudo-terminal: %v", err)
	}
	if _, err := term.MakeRaw(int(slave.Fd())); err != nil {
		t.Fatal(err)
	}
	got := make(chan string)
	go func() {
		var b bytes.Buffer
		io.Copy(&b, master) // ends with EIO once the slave is closed
		got <- b.String()
	}()
	return slave, func() string {
		slave.Close()
		return <-got
	}
}

// TestHostileTextThroughEveryCommand sends hostileStrings through every
// command that shows what a card, a disk, a config or an image holds:
// nothing reaches stdout or stderr raw, and each journal entry or
// hand-over value stays on its line.
func TestHostileTextThroughEveryCommand(t *testing.T) {
	t.Parallel()
	// A card whose journal fields, hand-over and files are hostile.
	ho := journal.HandOver{BootOrder: hostileAll, EEPROM: hostileAll, Retired: hostileAll, Logins: hostileStrings, Address: hostileAll,
		Confirmed: &journal.Confirmation{Boot: 3, System: hostileAll, Addresses: hostileStrings}}
	state, err := json.Marshal(journal.State{HandOver: &ho})
	if err != nil {
		t.Fatal(err)
	}
	var jsonl bytes.Buffer
	for _, s := range hostileStrings {
		e := journal.Entry{V: journal.Version, Step: "target" + s, Event: journal.Fail, Boot: 1, Msg: s, Hint: s, State: state}
		line, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		jsonl.Write(append(line, '\n'))
	}
	// A line no Pi writes: raw bytes, which only --json shows.
	jsonl.WriteString(`{"v":1,"msg":"` + hostileAll + "\"}\n")
	files := map[string][]byte{"journal.jsonl": jsonl.Bytes(), "FAILED": []byte(hostileAll + "\n"), "install.log": []byte(hostileAll + "\n")}
	card := cardImage(t, files)

	r := runNixpiEnv(t, nil, "report", "--log", card)
	if r.code != exitOK {
		t.Fatalf("report: exit %d: %s", r.code, r.stderr)
	}
	assertNoRawHostile(t, "report", r.stdout+r.stderr, "nixpi/FAILED:")
	for _, want := range []string{`FAILED: busy\nINSTALL COMPLETE`, `retired    \x1b[2J`, `address \x1b[2J`, `safe\roverwritten`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, r.stdout)
		}
	}
	// --json: the card's bytes into a pipe, escaped on a terminal.
	if r := runNixpiEnv(t, nil, "report", "--json", card); r.code != exitOK || r.stdout != jsonl.String() {
		t.Errorf("report --json into a pipe: exit %d, not the card's bytes:\n%q", r.code, r.stdout)
	}
	tty, output := openPTY(t)
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"report", "--json", card}, strings.NewReader(""), tty, &stderr, func(string) string { return "" })
	onTerminal := output()
	if code != exitOK || !strings.Contains(onTerminal, `\x1b[2J`) {
		t.Errorf("report --json on a terminal: exit %d, %q", code, onTerminal)
	}
	assertNoRawBytes(t, "report --json on a terminal", onTerminal+stderr.String())

	// inspect: a base whose cmdline.txt, card config and journal are hostile.
	dir := t.TempDir()
	base := writeTestFixture(t, dir, fixture.Options{})
	at := base.Path + "@@" + strconv.FormatInt(base.BootPart.Start, 10)
	cmdline := writeTestFile(t, filepath.Join(dir, "cmdline.txt"), "console=tty1 "+hostileAll+"\n")
	cardConfig := writeTestFile(t, filepath.Join(dir, "nixpi.toml"), "schema = 1\n[system]\nhostname = "+tomlString(hostileUTF8)+"\n")
	local := writeTestFile(t, filepath.Join(dir, "journal.jsonl"), jsonl.String())
	for _, argv := range [][]string{{"mmd", "-i", at, "::/nixpi"}, {"mcopy", "-o", "-i", at, cmdline, "::/cmdline.txt"},
		{"mcopy", "-i", at, cardConfig, "::/nixpi/nixpi.toml"}, {"mcopy", "-i", at, local, "::/nixpi/journal.jsonl"}} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
	}
	r = runNixpiEnv(t, nil, "inspect", base.Path)
	assertNoRawHostile(t, "inspect", r.stdout+r.stderr, "")
	for _, want := range []string{`cmdline.txt: console=tty1 \x1b[2J`, "nixpi config: unreadable: nixpi/nixpi.toml:3: system.hostname", `busy\nINSTALL COMPLETE`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("inspect lacks %q:\n%s", want, r.stdout)
		}
	}
	r = runNixpiEnv(t, nil, "inspect", "--json", base.Path)
	assertNoRawHostile(t, "inspect --json", r.stdout+r.stderr, "")
	var in map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &in); err != nil {
		t.Errorf("inspect --json is no longer JSON once escaped: %v", err)
	}

	// eeprom config: an image whose bootconf.txt is hostile.
	if data := eepromDataOrEmpty(t); data != "" {
		im, err := eeprom.Parse(mustRead(t, filepath.Join(data, "images", "pieeprom-2020-09-03.bin")))
		if err != nil {
			t.Fatal(err)
		}
		if err := im.SetConfig([]byte("[all]\nBOOT_ORDER=0xf41\n# " + hostileAll + "\n")); err != nil {
			t.Fatal(err)
		}
		img := filepath.Join(dir, "pieeprom.bin")
		if err := os.WriteFile(img, im.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		r = runNixpiEnv(t, nil, "eeprom", "config", img)
		if r.code != exitOK || !strings.Contains(r.stdout, `# \x1b[2J`) {
			t.Errorf("eeprom config: exit %d, %q", r.code, r.stdout)
		}
		assertNoRawBytes(t, "eeprom config", r.stdout+r.stderr)
	}

	// A hostile name on the command line comes back escaped in the error.
	r = runNixpiEnv(t, nil, "inspect", filepath.Join(dir, hostileAll+".img"))
	if r.code != exitFailure {
		t.Errorf("inspect of a missing hostile name: exit %d", r.code)
	}
	assertNoRawHostile(t, "inspect's error", r.stdout+r.stderr, "")
}

// eepromDataOrEmpty is eepromData, or "" without the real images.
func eepromDataOrEmpty(t *testing.T) string {
	data := filepath.Join(eepromRepoRoot(t), "..", "shared", "testdata", "rpi-eeprom")
	if _, err := os.Stat(filepath.Join(data, "images")); err != nil {
		t.Logf("real bootloader images not found at %s: eeprom config is not tried", data)
		return ""
	}
	return data
}

// TestHostileConfigRefusedEverywhere puts each hostile string in a config
// (in a plain value, a list entry, the module, a secret) and gives it to
// every command that reads one: each refuses it at FILE:LINE, before
// anything is written, and shows none of it raw.
func TestHostileConfigRefusedEverywhere(t *testing.T) {
	t.Parallel()
	env := deviceBinariesEnv(t)
	dir := t.TempDir()
	base := writeTestFixture(t, dir, fixture.Options{})
	type place struct{ name, toml, key string }
	for i, s := range hostileStrings {
		for _, p := range []place{
			{"hostname", "[system]\nhostname = " + tomlString(s) + "\n", "system.hostname"},
			{"ssh key", "[[users]]\nname = \"al\"\nssh_keys = [" + tomlString(s) + "]\n", "users[0].ssh_keys"},
			{"module", "[nixos]\nextra_module = " + tomlString("{ ... }: { } # "+s) + "\n", "nixos.extra_module"},
			{"psk", "[wlan]\nssid = \"home\"\ncountry = \"DE\"\npsk = " + tomlString("12345678"+s) + "\n", "wlan.psk"},
		} {
			t.Run(fmt.Sprintf("%d %s", i, p.name), func(t *testing.T) {
				t.Parallel()
				if p.key == "nixos.extra_module" && s == hostileStrings[3] {
					t.Skip("a line break is what a module may hold")
				}
				dir := t.TempDir()
				wantAt := "nixpi.toml:"
				if !utf8.ValidString(s) {
					wantAt = "not UTF-8 text"
				}
				cfg := writeTestFile(t, filepath.Join(dir, "nixpi.toml"), "schema = 1\n"+p.toml)
				dev := filepath.Join(dir, "card.img")
				for _, args := range [][]string{
					{"config", "check", cfg},
					{"config", "nixos", cfg},
					{"build", "--base", base.Path, "--config", cfg, "--out", dev},
				} {
					before := dirNames(t, dir)
					r := runNixpiEnv(t, env, args...)
					if r.code != exitFailure || !strings.Contains(r.stderr, wantAt) {
						t.Errorf("%s: exit %d, want 1 and %q:\n%s", args[:2], r.code, wantAt, r.stderr)
					}
					if wantAt == "nixpi.toml:" && !strings.Contains(r.stderr, p.key) {
						t.Errorf("%s does not name %s:\n%s", args[:2], p.key, r.stderr)
					}
					assertNoRawHostile(t, strings.Join(args[:2], " "), r.stdout+r.stderr, "")
					assertNoSecret(t, r.stdout+r.stderr)
					assertNoOutput(t, dir, before)
				}
			})
		}
	}
}

// flash --base refuses a hostile config before it writes the card.
func TestFlashBaseRefusesHostileConfig(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root for losetup (CI runs as root)")
	}
	dir := t.TempDir()
	base := writeTestFixture(t, dir, fixture.Options{})
	cfg := writeTestFile(t, filepath.Join(dir, "nixpi.toml"), "schema = 1\n[system]\nhostname = "+tomlString(hostileUTF8)+"\n")
	dev := flashLoop(t, 64<<20)
	blank := prefixSum(t, dev, 64<<20)
	r := runNixpiEnv(t, deviceBinariesEnv(t), "flash", "--base", base.Path, "--config", cfg, "--yes", "--allow-non-removable", dev)
	if r.code != exitFailure || !strings.Contains(r.stderr, cfg+":3: system.hostname") {
		t.Errorf("flash --base: exit %d, want 1 and the config's line:\n%s", r.code, r.stderr)
	}
	assertNoRawHostile(t, "flash --base", r.stdout+r.stderr, "")
	if prefixSum(t, dev, 64<<20) != blank {
		t.Errorf("flash --base wrote %s for a config it refuses", dev)
	}
}

// TestFlashPromptEscapesTheDisk: the confirmation shows sysfs fields, and
// a loop device's model is its backing file's name, which anyone who can
// name a file chooses. Named with every hostile string, it reaches the
// prompt and the refusals escaped, each value on its line.
func TestFlashPromptEscapesTheDisk(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root for losetup (CI runs as root)")
	}
	dir := t.TempDir()
	base := writeTestFixture(t, dir, fixture.Options{})
	cfg := writeTestFile(t, filepath.Join(dir, "nixpi.toml"), buildTestConfig)
	// A file name holds any byte but NUL and '/'.
	file := filepath.Join(t.TempDir(), strings.ReplaceAll(hostileAll, "\x00", ""))
	if err := os.WriteFile(file, nil, 0o600); err != nil || os.Truncate(file, 64<<20) != nil {
		t.Fatal("create device file", err)
	}
	out, err := exec.Command("losetup", "--find", "--show", file).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
	env := deviceBinariesEnv(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--allow-non-removable"}, "Type " + filepath.Base(dev)},
		{nil, "is not removable"},
	} {
		var stdout, stderr bytes.Buffer
		args := append([]string{"flash", "--base", base.Path, "--config", cfg, dev}, c.args...)
		code := run(context.Background(), args, strings.NewReader("not-the-name\n"), &stdout, &stderr, func(k string) string { return env[k] })
		got := stdout.String() + stderr.String()
		if code != exitFailure || !strings.Contains(got, c.want) || !strings.Contains(got, `loop device of `) || !strings.Contains(got, `busy\nINSTALL COMPLETE`) {
			t.Errorf("flash %v: exit %d, want 1, %q and the backing file escaped:\n%s", c.args, code, c.want, got)
		}
		assertNoRawHostile(t, "flash "+strings.Join(c.args, " "), got, "")
	}
}

// restore-card and inspect show a retired card's retired.json (its boot
// order) escaped, on its line.
func TestRetiredCardTextIsEscaped(t *testing.T) {
	t.Parallel()
	img := cardImage(t, map[string][]byte{"journal.jsonl": []byte(`{"v":1,"step":"done","event":"done","time":"2026-11-25T03:00:00Z","boot":2}` + "\n")})
	const start, size = 8192 * 512, 64<<20 - 8192*512
	withCardFAT(t, img, start, size, func(c *builder.FATCard) {
		for name, data := range map[string]string{"start4.elf": "s4", "config.txt": "[all]\n", "cmdline.txt": "root=PARTUUID=x-02\n"} {
			if err := c.WriteFile(name, []byte(data)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := retire.Retire(c, hostileAll, nil, nil); err != nil {
			t.Fatal(err)
		}
	})
	for _, args := range [][]string{{"inspect", img}, {"restore-card", img}} {
		r := runNixpiEnv(t, nil, args...)
		if r.code != exitOK || !strings.Contains(r.stdout, `busy\nINSTALL COMPLETE`) {
			t.Errorf("%s: exit %d, lacks the boot order escaped:\n%s%s", args[0], r.code, r.stdout, r.stderr)
		}
		assertNoRawHostile(t, args[0], r.stdout+r.stderr, "")
	}
}
