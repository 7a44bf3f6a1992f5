package steps

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/journal"
	"github.com/nixpi/nixpi/firstboot/nixos"
)

const standinNixpkgs = "/nix/store/0c4vkkq8z4ikn1sd3sbh4nmspv0zf1sk-source"

func TestNixpkgsFetchesRecordsAndSkips(t *testing.T) {
	t.Parallel()
	u := newConfigureUnit(t, "[nixos]\nnixpkgs_url = \"http://10.0.2.2:8080/nixpkgs.tar.gz\"\n", true)
	u.env.State.Nix = &journal.Nix{Installer: "debian", Version: "2.26.3"}
	expr := `builtins.fetchTarball { url = "http://10.0.2.2:8080/nixpkgs.tar.gz"; sha256 = "sha256-ugpsyk3NM2s87vXfUiIIiibbJ4Pp0JPS5p/3mfs+q+c="; }`
	u.run.On(`"`+standinNixpkgs+`"`+"\n", "/usr/bin/nix-instantiate", "--eval", "--read-write-mode", "--json", "-E", expr)
	u.run.OnRun = func([]string) { u.write(t, standinNixpkgs+"/default.nix", "{ ... }: { }\n", 0o644) }
	step := NewNixpkgs()
	if done, why, _ := step.Probe(context.Background(), u.env); done || why != "nixpkgs 21a67dc47014 is not fetched yet" {
		t.Fatalf("Probe = %v, %q", done, why)
	}
	if err := step.Run(context.Background(), u.env); err != nil {
		t.Fatal(err)
	}
	if got := u.run.Transcript(); got != "/usr/bin/nix-instantiate --eval --read-write-mode --json -E "+`"builtins.fetchTarball { url = \"http://10.0.2.2:8080/nixpkgs.tar.gz\"; sha256 = \"sha256-ugpsyk3NM2s87vXfUiIIiibbJ4Pp0JPS5p/3mfs+q+c=\"; }"`+"\n" {
		t.Errorf("ran %q", got)
	}
	if u.env.State.NixpkgsPath != standinNixpkgs {
		t.Errorf("state path %q", u.env.State.NixpkgsPath)
	}
	data, _ := u.read(t, nixos.PinsFile)
	var pins pinsRecord
	if err := json.Unmarshal([]byte(data), &pins); err != nil {
		t.Fatal(err)
	}
	if p := pins.Nixpkgs; p.Rev != "21a67dc470149f337cecafbe965d8d252a390518" || p.Release != "26.05" || !p.Pinned || p.URL != "http://10.0.2.2:8080/nixpkgs.tar.gz" || p.Path != standinNixpkgs ||
		pins.Nix.Version != "2.26.3" || pins.Nix.Installer != "debian" {
		t.Errorf("pins = %+v", pins)
	}
	if done, why, _ := step.Probe(context.Background(), u.env); !done || !strings.Contains(why, "already fetched and verified") {
		t.Errorf("Probe after = %v, %q", done, why)
	}
	// The store path gone (garbage-collected): fetched again.
	os.RemoveAll(u.env.Path(standinNixpkgs))
	if done, _, _ := step.Probe(context.Background(), u.env); done {
		t.Error("Probe done without the store path")
	}
}

func TestNixpkgsHashMismatchSaysSo(t *testing.T) {
	t.Parallel()
	u := newConfigureUnit(t, "", true)
	u.run.Fail(1, "error: hash mismatch in file downloaded from 'https://github.com/NixOS/nixpkgs/archive/21a6.tar.gz'", "/usr/bin/nix-instantiate")
	err := NewNixpkgs().Run(context.Background(), u.env)
	if err == nil || !strings.Contains(err.Error(), "hash mismatch") || !strings.Contains(engine.HintOf(err), "nixos.nixpkgs_sha256") {
		t.Fatalf("error = %v, hint %q", err, engine.HintOf(err))
	}
	if u.env.State.NixpkgsPath != "" {
		t.Error("a path was recorded")
	}
}

// The pins file goes into /mnt/etc/nixos before configure runs: a link
// there is refused by this step too, and nothing lands outside the SSD.
func TestNixpkgsRefusesSymlinkedEtcNixos(t *testing.T) {
	t.Parallel()
	u := newConfigureUnit(t, "", true)
	u.run.On(`"`+standinNixpkgs+`"`+"\n", "/usr/bin/nix-instantiate")
	outside := u.env.Path("/boot/firmware")
	u.write(t, "/boot/firmware/config.txt", "[all]\n", 0o644)
	u.write(t, "/mnt/etc/.keep", "", 0o644)
	if err := os.Symlink(outside, u.env.Path("/mnt"+nixos.ConfigDir)); err != nil {
		t.Fatal(err)
	}
	err := NewNixpkgs().Run(context.Background(), u.env)
	if err == nil || !strings.Contains(err.Error(), `"/mnt/etc/nixos" on the SSD is a symbolic link`) {
		t.Fatalf("error = %v", err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("nixpkgs wrote outside the SSD: %v", entries)
	}
}
