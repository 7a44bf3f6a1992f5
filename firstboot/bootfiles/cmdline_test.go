package bootfiles

import (
	"strings"
	"testing"
)

const (
	bookworm = "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n"
	trixie   = "console=serial0,115200 console=tty1 root=PARTUUID=9c1a2b3d-02 rootfstype=ext4 fsck.repair=yes rootwait resize\n"
	hookFW   = " systemd.run=/boot/firmware/nixpi/nixpi-firstboot systemd.run_success_action=reboot systemd.unit=kernel-command-line.target"
)

func TestHookWords(t *testing.T) {
	t.Parallel()
	for mount, want := range map[string]string{
		"/boot/firmware":  "systemd.run=/boot/firmware/nixpi/nixpi-firstboot",
		"/boot/firmware/": "systemd.run=/boot/firmware/nixpi/nixpi-firstboot",
		"/boot":           "systemd.run=/boot/nixpi/nixpi-firstboot",
	} {
		got := HookWords(mount)
		if len(got) != 3 || got[0] != want || got[1] != "systemd.run_success_action=reboot" || got[2] != "systemd.unit=kernel-command-line.target" {
			t.Errorf("HookWords(%q) = %q", mount, got)
		}
	}
}

func TestAddHook(t *testing.T) {
	t.Parallel()
	hook := HookWords("/boot/firmware")
	tests := []struct {
		name, in, want, err string
	}{
		{name: "bookworm keeps init=firstboot", in: bookworm, want: strings.TrimSuffix(bookworm, "\n") + hookFW + "\n"},
		{name: "trixie keeps resize", in: trixie, want: strings.TrimSuffix(trixie, "\n") + hookFW + "\n"},
		{name: "no trailing newline", in: "root=/dev/mmcblk0p2 rootwait", want: "root=/dev/mmcblk0p2 rootwait" + hookFW},
		{name: "crlf", in: "root=/dev/sda2 quiet\r\n", want: "root=/dev/sda2 quiet" + hookFW + "\r\n"},
		{name: "trailing spaces stay after the hook", in: "root=/dev/sda2  \t\n", want: "root=/dev/sda2" + hookFW + "  \t\n"},
		{name: "tabs and double spaces inside kept", in: "a\t b  c\n", want: "a\t b  c" + hookFW + "\n"},
		{name: "quoted value", in: `root=/dev/sda2 dyndbg="file x.c +p"` + "\n", want: `root=/dev/sda2 dyndbg="file x.c +p"` + hookFW + "\n"},
		{name: "already hooked is unchanged", in: strings.TrimSuffix(trixie, "\n") + hookFW + "\n", want: strings.TrimSuffix(trixie, "\n") + hookFW + "\n"},
		{name: "blank lines after the line are fine", in: "root=/dev/sda2\n\n  \n", want: "root=/dev/sda2" + hookFW + "\n\n  \n"},
		{name: "second line", in: "root=/dev/sda2\nquiet\n", err: "more than one line"},
		{name: "empty", in: "", err: "cmdline.txt is empty"},
		{name: "only whitespace", in: " \n", err: "cmdline.txt is empty"},
		{name: "other systemd.run hook", in: "root=/dev/sda2 systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot\n", err: `already has "systemd.run=/boot/firstrun.sh"`},
		{name: "other systemd.unit", in: "root=/dev/sda2 systemd.unit=rescue.target\n", err: `already has "systemd.unit=rescue.target"`},
		{name: "half a hook", in: "root=/dev/sda2 systemd.unit=kernel-command-line.target\n", err: "another first-boot hook"},
		{name: "unmatched quote", in: "root=/dev/sda2 x=\"a b\n", err: "unmatched double quote"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := AddHook(tt.in, hook)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("AddHook(%q) error = %v, want it to contain %q", tt.in, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("AddHook(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("AddHook(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
			if !HasHook(got, hook) {
				t.Errorf("HasHook(AddHook(x)) = false for %q", got)
			}
		})
	}
}

func TestRemoveHook(t *testing.T) {
	t.Parallel()
	hook := HookWords("/boot/firmware")
	tests := []struct{ name, in, want string }{
		{"appended by AddHook", strings.TrimSuffix(bookworm, "\n") + hookFW + "\n", bookworm},
		{"no hook: unchanged", trixie, trixie},
		{"hook words in the middle", "a systemd.run=/boot/firmware/nixpi/nixpi-firstboot b systemd.unit=kernel-command-line.target c systemd.run_success_action=reboot\n", "a b c\n"},
		{"hook first", "systemd.run=/boot/firmware/nixpi/nixpi-firstboot root=/dev/sda2\n", "root=/dev/sda2\n"},
		{"only the hook", strings.TrimPrefix(hookFW, " ") + "\n", "\n"},
		{"other mount's hook is not ours", "a systemd.run=/boot/nixpi/nixpi-firstboot\n", "a systemd.run=/boot/nixpi/nixpi-firstboot\n"},
		{"similar words stay", "a systemd.run=/boot/firmware/nixpi/nixpi-firstboot2 systemd.unit=kernel-command-line.targets\n", "a systemd.run=/boot/firmware/nixpi/nixpi-firstboot2 systemd.unit=kernel-command-line.targets\n"},
		{"crlf", "root=/dev/sda2" + hookFW + "\r\n", "root=/dev/sda2\r\n"},
		{"hook inside a quoted value is not a word", `x="a` + hookFW + `"` + "\n", `x="a` + hookFW + `"` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := RemoveHook(tt.in, hook)
			if got != tt.want {
				t.Fatalf("RemoveHook(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
			if HasHook(got, hook) {
				t.Errorf("hook still there: %q", got)
			}
			if again := RemoveHook(got, hook); again != got {
				t.Errorf("RemoveHook is not idempotent: %q then %q", got, again)
			}
		})
	}
}

func TestHasHook(t *testing.T) {
	t.Parallel()
	hook := HookWords("/boot")
	for in, want := range map[string]bool{
		"root=x" + strings.ReplaceAll(hookFW, "/boot/firmware", "/boot"): true,
		"root=x" + hookFW: false,
		"root=x systemd.run=/boot/nixpi/nixpi-firstboot": false,
		"root=x\nsystemd.run=/boot/nixpi/nixpi-firstboot systemd.run_success_action=reboot systemd.unit=kernel-command-line.target": false,
		"": false,
	} {
		if got := HasHook(in, hook); got != want {
			t.Errorf("HasHook(%q) = %v, want %v", in, got, want)
		}
	}
	if HasHook("anything", nil) {
		t.Error("HasHook with no words = true")
	}
}

func TestRootAndParam(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, key, want string }{
		{bookworm, "root", "PARTUUID=4e639091-02"},
		{trixie, "rootfstype", "ext4"},
		{bookworm, "init", "/usr/lib/raspberrypi-sys-mods/firstboot"},
		{"root=/dev/sda2 root=/dev/sdb2\n", "root", "/dev/sdb2"}, // the kernel takes the last
		{"rootwait\n", "root", ""},
		{`root="PARTUUID=ab-02"` + "\n", "root", "PARTUUID=ab-02"},
		{"root=/dev/sda2\nroot=/dev/sdc2\n", "root", "/dev/sda2"}, // only the first line counts
	}
	for _, tt := range tests {
		got, _ := Param(tt.in, tt.key)
		if got != tt.want {
			t.Errorf("Param(%q, %q) = %q, want %q", tt.in, tt.key, got, tt.want)
		}
	}
	if got := Root(bookworm); got != "PARTUUID=4e639091-02" {
		t.Errorf("Root = %q", got)
	}
	if _, ok := Param("quiet rootwait", "root"); ok {
		t.Error("Param found root= where there is none")
	}
}

func FuzzAddRemoveHook(f *testing.F) {
	for _, s := range []string{bookworm, trixie, "a", "a\r\n", " a  b\t\n\n", `x="y z" w`, "root=/dev/sda2 systemd.run=/x", "\n", "a\nb"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, cmdline string, oldMount bool) {
		mount := "/boot/firmware"
		if oldMount {
			mount = "/boot"
		}
		hook := HookWords(mount)
		hadHook := HasHook(cmdline, hook)
		// Removing leaves no hook word and keeps every other word in order.
		var kept []string
		for _, w := range words(cmdline) {
			if !contains(hook, w.text) {
				kept = append(kept, w.text)
			}
		}
		var after []string
		for _, w := range words(RemoveHook(cmdline, hook)) {
			after = append(after, w.text)
		}
		if strings.Join(after, "\x00") != strings.Join(kept, "\x00") {
			t.Fatalf("RemoveHook(%q) words = %q, want %q", cmdline, after, kept)
		}
		added, err := AddHook(cmdline, hook)
		if err != nil {
			return
		}
		if !HasHook(added, hook) {
			t.Fatalf("AddHook(%q) = %q has no hook", cmdline, added)
		}
		if again, err := AddHook(added, hook); err != nil || again != added {
			t.Fatalf("AddHook not idempotent: %q -> %q, %v", added, again, err)
		}
		// The rest of the file after the first line is untouched.
		if cmdline[len(firstLine(cmdline)):] != added[len(firstLine(added)):] {
			t.Fatalf("AddHook changed later lines: %q -> %q", cmdline, added)
		}
		if hadHook {
			return
		}
		if removed := RemoveHook(added, hook); removed != cmdline {
			t.Fatalf("RemoveHook(AddHook(%q)) = %q", cmdline, removed)
		}
		if Root(added) != Root(cmdline) {
			t.Fatalf("root= changed: %q -> %q", Root(cmdline), Root(added))
		}
	})
}
