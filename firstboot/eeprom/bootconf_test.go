package eeprom

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSetKeys(t *testing.T) {
	t.Parallel()
	bootOrder := Setting{"BOOT_ORDER", "0xf41"}
	cases := []struct {
		name, in, want string
		set            []Setting
	}{
		{"replace in place", "[all]\nBOOT_UART=0\nBOOT_ORDER=0xf14\nWAKE_ON_GPIO=1\n",
			"[all]\nBOOT_UART=0\nBOOT_ORDER=0xf41\nWAKE_ON_GPIO=1\n", []Setting{bootOrder}},
		{"only the first", "BOOT_ORDER=0x1\n[pi4]\nBOOT_ORDER=0x2\n",
			"BOOT_ORDER=0xf41\n[pi4]\nBOOT_ORDER=0x2\n", []Setting{bootOrder}},
		{"comment is not a setting", "[all]\n#BOOT_ORDER=0xf14\n",
			"[all]\n#BOOT_ORDER=0xf14\nBOOT_ORDER=0xf41\n", []Setting{bootOrder}},
		{"add to end of [all]", "[all]\nBOOT_UART=0\nWAKE_ON_GPIO=1\nPOWER_OFF_ON_HALT=0\n\n",
			"[all]\nBOOT_UART=0\nWAKE_ON_GPIO=1\nPOWER_OFF_ON_HALT=0\nBOOT_ORDER=0xf41\n\n", []Setting{bootOrder}},
		{"[all] before another section", "[all]\nBOOT_UART=0\n\n[cm4]\nWAKE_ON_GPIO=0\n",
			"[all]\nBOOT_UART=0\nBOOT_ORDER=0xf41\n\n[cm4]\nWAKE_ON_GPIO=0\n", []Setting{bootOrder}},
		{"empty [all]", "[all]\n[none]\nX=1\n",
			"[all]\nBOOT_ORDER=0xf41\n[none]\nX=1\n", []Setting{bootOrder}},
		{"no [all]", "[pi4]\nBOOT_UART=1\n",
			"[pi4]\nBOOT_UART=1\n[all]\nBOOT_ORDER=0xf41\n", []Setting{bootOrder}},
		{"no [all], no final newline", "BOOT_UART=1",
			"BOOT_UART=1\n[all]\nBOOT_ORDER=0xf41\n", []Setting{bootOrder}},
		{"empty config", "", "[all]\nBOOT_ORDER=0xf41\n", []Setting{bootOrder}},
		{"last line without newline", "[all]\nBOOT_UART=0",
			"[all]\nBOOT_UART=0\nBOOT_ORDER=0xf41\n", []Setting{bootOrder}},
		{"replace keeps missing newline", "[all]\nBOOT_ORDER=0x1",
			"[all]\nBOOT_ORDER=0xf41", []Setting{bootOrder}},
		{"crlf", "[all]\r\nBOOT_UART=0\r\n",
			"[all]\r\nBOOT_UART=0\r\nBOOT_ORDER=0xf41\r\n", []Setting{bootOrder}},
		{"crlf replace", "[all]\r\nBOOT_ORDER=0x1\r\n",
			"[all]\r\nBOOT_ORDER=0xf41\r\n", []Setting{bootOrder}},
		{"prefix of another key", "[all]\nBOOT_ORDER_X=1\n",
			"[all]\nBOOT_ORDER_X=1\nBOOT_ORDER=0xf41\n", []Setting{bootOrder}},
		{"several in order", "[all]\nBOOT_UART=0\n",
			"[all]\nBOOT_UART=1\nBOOT_ORDER=0xf41\nHDMI_DELAY=0\n",
			[]Setting{{"BOOT_UART", "1"}, bootOrder, {"HDMI_DELAY", "0"}}},
		{"same key twice: last wins", "[all]\n",
			"[all]\nBOOT_ORDER=0xf14\n", []Setting{bootOrder, {"BOOT_ORDER", "0xf14"}}},
	}
	for _, c := range cases {
		got, err := SetKeys([]byte(c.in), c.set...)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if string(got) != c.want {
			t.Errorf("%s: SetKeys(%q) =\n%q\nwant\n%q", c.name, c.in, got, c.want)
		}
	}
}

func TestSetKeysRejects(t *testing.T) {
	t.Parallel()
	for _, s := range []Setting{
		{"", "1"}, {"BOOT ORDER", "1"}, {"A=B", "1"}, {"X", "a\nb"}, {"X", "a\rb"},
		{"BOOT_ORDER", "f41"}, {"BOOT_ORDER", "0x"}, {"BOOT_ORDER", "0x123456789"},
		{"BOOT_ORDER", "0xf81"}, {"BOOT_ORDER", "0xg"}, {"BOOT_ORDER", ""},
	} {
		if out, err := SetKeys([]byte("[all]\n"), s); err == nil {
			t.Errorf("SetKeys accepted %q=%q: %q", s.Key, s.Value, out)
		}
	}
}

func TestValidateBootOrder(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"0xf41", "0xf14", "0x1", "0XF41", "0xf21", "0xf46", "0x00000f41", "0xe7653210"} {
		if err := ValidateBootOrder(v); err != nil {
			t.Errorf("ValidateBootOrder(%q): %v", v, err)
		}
	}
	for _, v := range []string{"", "f41", "0x", "0xf418f418f", "0x8", "0x9", "0xa", "0xb", "0xc", "0xd", "0xf4 1", "-0x1", "0xf41\n"} {
		err := ValidateBootOrder(v)
		if err == nil {
			t.Errorf("ValidateBootOrder(%q) accepted it", v)
		} else if !strings.Contains(err.Error(), "0xf41") {
			t.Errorf("ValidateBootOrder(%q) error %q does not show an example", v, err)
		}
	}
}

func TestParseSetting(t *testing.T) {
	t.Parallel()
	s, err := ParseSetting("TFTP_PREFIX_STR=a=b")
	if err != nil || s.Key != "TFTP_PREFIX_STR" || s.Value != "a=b" {
		t.Fatalf("ParseSetting = %+v, %v", s, err)
	}
	if _, err := ParseSetting("BOOT_ORDER"); err == nil {
		t.Fatal("ParseSetting accepted a setting without '='")
	}
	if _, err := ParseSetting("BOOT_ORDER=0x9"); err == nil {
		t.Fatal("ParseSetting accepted BOOT_ORDER=0x9")
	}
}

func TestHasAndLookup(t *testing.T) {
	t.Parallel()
	cfg := []byte("[all]\r\nBOOT_UART=0\r\nBOOT_ORDER=0xF41\r\n[pi4]\nBOOT_ORDER=0x1\n")
	if v, ok := Lookup(cfg, "BOOT_ORDER"); !ok || v != "0xF41" {
		t.Fatalf("Lookup = %q, %v", v, ok)
	}
	if _, ok := Lookup(cfg, "HDMI_DELAY"); ok {
		t.Fatal("Lookup found an absent key")
	}
	// The [pi4] section's BOOT_ORDER=0x1 comes later and wins on a Pi 4: the
	// config does not have 0xf41, whatever its first line says.
	for _, o := range []string{"0xf41", "0x1"} {
		if Has(cfg, Setting{"BOOT_ORDER", o}) {
			t.Errorf("Has(BOOT_ORDER=%s) of a config with two assignments in force", o)
		}
	}
	cfg = []byte("[all]\r\nBOOT_UART=0\r\nBOOT_ORDER=0xF41\r\n[none]\nBOOT_ORDER=0x1\n")
	for s, want := range map[Setting]bool{
		{"BOOT_ORDER", "0xf41"}:     true, // same number; [none] never applies
		{"BOOT_ORDER", "0x0f41"}:    true,
		{"BOOT_ORDER", "0xf14"}:     false,
		{"BOOT_UART", "0"}:          true,
		{"BOOT_UART", "00"}:         false, // only BOOT_ORDER compares as a number
		{"POWER_OFF_ON_HALT", "0"}:  false,
		{"BOOT_ORDER_X", "0xf41"}:   false,
		{"BOOT_ORDER", "not a num"}: false,
	} {
		if got := Has(cfg, s); got != want {
			t.Errorf("Has(%s) = %v, want %v", s, got, want)
		}
	}
}

// Every key in the bootconf.txt of Raspberry Pi's released Pi 4 images is
// one KnownKey knows, and a key spelt in another case is not.
func TestKnownKeysCoverReleasedConfigs(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "..", "..", "shared", "testdata", "rpi-eeprom", "configs")
	configs, err := filepath.Glob(filepath.Join(dir, "bootconf-*.txt"))
	if err != nil || len(configs) == 0 {
		t.Skipf("no released configs in %s", dir)
	}
	for _, path := range configs {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			key, _, ok := strings.Cut(strings.TrimSpace(line), "=")
			if !ok || strings.HasPrefix(key, "#") {
				continue
			}
			if !KnownKey(key) {
				t.Errorf("%s: %s is not a known key", filepath.Base(path), key)
			}
		}
	}
	for _, key := range []string{"boot_order", "Boot_Order", "BOOT_ORDERS", ""} {
		if KnownKey(key) || UnknownKeyWarning(key) == "" {
			t.Errorf("KnownKey(%q) = true", key)
		}
	}
	if w := UnknownKeyWarning("wake_on_gpio"); !strings.Contains(w, "did you mean WAKE_ON_GPIO?") {
		t.Errorf("warning for wake_on_gpio: %q", w)
	}
}

func TestCheckSig(t *testing.T) {
	t.Parallel()
	cfg := []byte("[all]\nBOOT_ORDER=0xf41\n")
	sum := sha256.Sum256(cfg)
	good := hex.EncodeToString(sum[:])
	for _, tc := range []struct {
		sig, want string
	}{
		{good + "\n", ""},
		{good + "\nts: 1700000000\nrsa2048: " + strings.Repeat("ab", 256) + "\n", ""},
		{strings.ToUpper(good) + "\n", ""},
		{strings.Repeat("0", 64) + "\nts: 1\n", "it signs sha256 " + strings.Repeat("0", 64) + ", the config's is " + good},
		{"ts: 1\n" + good + "\n", "not a .sig"},
		{"", "not a .sig"},
	} {
		err := CheckSig([]byte(tc.sig), cfg)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("CheckSig(%q): %v, want %q", tc.sig, err, tc.want)
		}
	}
}

func TestParseSettingRefusesControlCharacters(t *testing.T) {
	t.Parallel()
	for _, kv := range []string{"A=x\x00", "A=x\ny", "A=x\ry", "A=\x1b[31m", "A=x\ty", "A=\x7f", "A=\u202e", "A=\u0085", "A\x00=1", "A\n=1"} {
		if _, err := ParseSetting(kv); err == nil {
			t.Errorf("ParseSetting(%q) accepted it", kv)
		}
	}
	if _, err := ParseSetting("NETCONSOLE=6665@169.254.1.1/,6666@/"); err != nil {
		t.Errorf("a printable value: %v", err)
	}
}
