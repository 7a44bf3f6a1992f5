package bootfiles

import (
	"strings"
	"testing"
)

// stockBookworm is the end of Raspberry Pi OS Bookworm's config.txt (armhf
// images have no arm_64bit line).
const stockBookworm = `# For more options and information see
# http://rptl.io/configtxt
# Some settings may impact device functionality. See link above for details

# Uncomment some or all of these to enable the optional hardware interfaces
#dtparam=i2c_arm=on
#dtparam=spi=on

# Enable audio (loads snd_bcm2835)
dtparam=audio=on

# Automatically load overlays for detected cameras
camera_auto_detect=1

# Enable DRM VC4 V3D driver
dtoverlay=vc4-kms-v3d
max_framebuffers=2

# Run in 64-bit mode
arm_64bit=1

[cm4]
# Enable host mode on the 2711 built-in XHCI USB controller.
otg_mode=1

[cm5]
dtoverlay=dwc2,dr_mode=host

[all]
`

func TestArm64Effective(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		on   bool
		line int
	}{
		{"stock arm64", stockBookworm, true, 20},
		{"stock armhf", strings.Replace(stockBookworm, "arm_64bit=1\n", "", 1), false, 0},
		{"empty", "", false, 0},
		{"implicit all", "arm_64bit=1", true, 1},
		{"zero", "arm_64bit=0\n", false, 1},
		{"last wins", "arm_64bit=1\narm_64bit=0\n", false, 2},
		{"pi4 section applies", "[pi4]\narm_64bit=1\n", true, 2},
		{"pi4 overrides all", "arm_64bit=1\n[pi4]\narm_64bit=0\n", false, 3},
		{"pi3 does not apply", "[pi3]\narm_64bit=1\n", false, 0},
		{"cm4 does not apply to a Pi 4B", "[cm4]\narm_64bit=1\n", false, 0},
		{"none never applies", "[none]\narm_64bit=1\n", false, 0},
		{"all after none applies", "[none]\n[all]\narm_64bit=1\n", true, 3},
		{"model filters replace each other", "[pi3]\n[pi4]\narm_64bit=1\n", true, 3},
		{"conditional filter is not certain", "[HDMI:1]\narm_64bit=1\n", false, 0},
		{"conditional combines with pi4", "[pi4]\n[tryboot]\narm_64bit=1\n", false, 0},
		{"all resets conditions", "[EDID=VSC-TD2220]\n[all]\narm_64bit=1\n", true, 3},
		{"spaces around =", "arm_64bit = 1\n", true, 1},
		{"commented out", "#arm_64bit=1\n", false, 0},
		{"crlf", "[all]\r\narm_64bit=1\r\n", true, 2},
		{"uppercase filter", "[PI4]\narm_64bit=1\n", true, 2},
		{"not a number", "arm_64bit=yes\n", false, 1},
		{"other key", "arm_64bitx=1\n", false, 0},
	}
	for _, tt := range tests {
		on, line := Arm64Effective(tt.in)
		if on != tt.on || line != tt.line {
			t.Errorf("%s: Arm64Effective = %v, line %d; want %v, line %d", tt.name, on, line, tt.on, tt.line)
		}
	}
}

func TestSetArm64(t *testing.T) {
	t.Parallel()
	armhf := strings.Replace(stockBookworm, "# Run in 64-bit mode\narm_64bit=1\n", "", 1)
	tests := []struct {
		name    string
		in      string
		want    string
		changed bool
	}{
		{"stock arm64 unchanged", stockBookworm, stockBookworm, false},
		{"stock armhf: appended in the trailing [all]", armhf, armhf + "arm_64bit=1\n", true},
		{"zero in all replaced in place", "dtparam=audio=on\narm_64bit=0\ncamera_auto_detect=1\n", "dtparam=audio=on\narm_64bit=1\ncamera_auto_detect=1\n", true},
		{"zero with spaces keeps them", "arm_64bit = 0 \n", "arm_64bit = 1 \n", true},
		{"empty value", "arm_64bit=\n", "arm_64bit=1\n", true},
		{"empty file", "", "arm_64bit=1\n", true},
		{"no trailing newline", "dtparam=audio=on", "dtparam=audio=on\narm_64bit=1\n", true},
		{"ends in a filter: new [all]", "a=1\n[cm4]\notg_mode=1\n", "a=1\n[cm4]\notg_mode=1\n[all]\narm_64bit=1\n", true},
		{"ends in [pi4]: still [all]", "[pi4]\nb=2\n", "[pi4]\nb=2\n[all]\narm_64bit=1\n", true},
		{"crlf file gets crlf", "a=1\r\n[cm4]\r\n", "a=1\r\n[cm4]\r\n[all]\r\narm_64bit=1\r\n", true},
		{"pi4 zero after all one", "arm_64bit=1\n[pi4]\narm_64bit=0\n", "arm_64bit=1\n[pi4]\narm_64bit=1\n", true},
		{"two zeros, both fixed, no new line", "arm_64bit=0\n[all]\narm_64bit=0\n", "arm_64bit=1\n[all]\narm_64bit=1\n", true},
		{"pi3 zero left alone", "[pi3]\narm_64bit=0\n", "[pi3]\narm_64bit=0\n[all]\narm_64bit=1\n", true},
		{"conditional zero left alone", "[all]\n[HDMI:0]\narm_64bit=0\n[all]\n", "[all]\n[HDMI:0]\narm_64bit=0\n[all]\narm_64bit=1\n", true},
		{"none then nothing", "[none]\n", "[none]\n[all]\narm_64bit=1\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, changed := SetArm64(tt.in)
			if got != tt.want || changed != tt.changed {
				t.Fatalf("SetArm64(%q)\n got %q, %v\nwant %q, %v", tt.in, got, changed, tt.want, tt.changed)
			}
			if on, _ := Arm64Effective(got); !on {
				t.Errorf("not effective after SetArm64: %q", got)
			}
			if again, changed := SetArm64(got); changed || again != got {
				t.Errorf("second SetArm64 changed %q to %q", got, again)
			}
			if n := strings.Count(got, "arm_64bit"); n > strings.Count(tt.in, "arm_64bit")+1 {
				t.Errorf("arm_64bit duplicated: %q", got)
			}
		})
	}
}

func FuzzSetArm64(f *testing.F) {
	for _, s := range []string{stockBookworm, "", "arm_64bit=0", "[pi4]\narm_64bit=0\r\n", "[none]", "x=1\n[cm4]\n", "[HDMI:0]\narm_64bit=1\n[all", "arm_64bit=1\n[pi4]\narm_64bit=0\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, changed := SetArm64(in)
		if on, _ := Arm64Effective(out); !on {
			t.Fatalf("SetArm64(%q) = %q is not effective", in, out)
		}
		if again, changed2 := SetArm64(out); changed2 || again != out {
			t.Fatalf("not idempotent: %q -> %q", out, again)
		}
		if !changed {
			if out != in {
				t.Fatalf("unchanged but different: %q -> %q", in, out)
			}
			return
		}
		// Every input line survives in order; only arm_64bit lines that
		// apply to a Pi 4 may differ, and only their value.
		inLines, outLines := splitLines(in), splitLines(out)
		if len(outLines) < len(inLines) {
			t.Fatalf("lines lost: %q -> %q", in, out)
		}
		rewritten := map[int]bool{}
		for _, s := range (Pi4{}).Settings(Files{"config.txt": in}.Read, "config.txt") {
			if s.Key == Arm64Key {
				rewritten[s.index] = true
			}
		}
		for i, l := range inLines {
			o := outLines[i]
			if i == len(inLines)-1 && !strings.HasSuffix(l, "\n") {
				// A line ending may be added to the last line.
				if end := strings.TrimPrefix(o, l); end == "\n" || end == "\r\n" {
					o = l
				}
			}
			if rewritten[i] {
				k, _, _ := strings.Cut(l, "=")
				if !strings.HasPrefix(o, k+"=") {
					t.Fatalf("line %d key changed: %q -> %q", i+1, l, o)
				}
				continue
			}
			if o != l {
				t.Fatalf("line %d changed: %q -> %q", i+1, l, o)
			}
		}
		added := outLines[len(inLines):]
		if len(rewritten) > 0 && len(added) > 0 {
			t.Fatalf("both rewrote and appended: %q -> %q", in, out)
		}
		for _, l := range added {
			if l = strings.TrimRight(l, "\r\n"); l != "[all]" && l != "arm_64bit=1" {
				t.Fatalf("unexpected added line %q in %q", l, out)
			}
		}
	})
}

func TestPi4Value(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, in, key, want string
		found               bool
	}{
		{"the SSD's config.txt", SSDConfigTxt, "kernel", "u-boot-rpi4.bin", true},
		{"the SSD's armstub", SSDConfigTxt, "armstub", "armstub8-gic.bin", true},
		{"absent", SSDConfigTxt, "initramfs", "", false},
		{"last wins", "kernel=a.img\n[pi4]\nkernel = b.img\n", "kernel", "b.img", true},
		{"pi3 does not apply", "kernel=a.img\n[pi3]\nkernel=b.img\n", "kernel", "a.img", true},
		{"a conditional section may not apply", "[HDMI:1]\nkernel=b.img\n", "kernel", "", false},
	} {
		if got, found := Pi4Value(tt.in, tt.key); got != tt.want || found != tt.found {
			t.Errorf("%s: Pi4Value(%q) = %q, %v; want %q, %v", tt.name, tt.key, got, found, tt.want, tt.found)
		}
	}
}
