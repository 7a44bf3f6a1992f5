package nixos

import (
	"fmt"

	"github.com/nixpi/nixpi/firstboot/config"
)

// Pin is one nixpkgs revision and the hash that verifies its source.
type Pin struct {
	Release string // NixOS release, "26.05"
	Rev     string // nixpkgs commit, 40 hex digits
	// SHA256 is the NAR hash of the unpacked source tree: a flake.lock's
	// narHash for github:NixOS/nixpkgs/REV, the same value fetchTarball's
	// sha256 takes (SRI or Nix base32 as the config accepts).
	SHA256 string
	// Date is the revision's commit date (flake.lock's lastModified), for people.
	Date string
	// Pinned is false for a user's own nixos.nixpkgs_rev.
	Pinned bool
}

// pins is the one table of nixpkgs revisions nixpi ships, updated per
// release. Never invent an entry: each pin is a revision of the release
// branch whose hash at least two public sources agree on.
//
// 26.05: nixos-26.05 at 21a67dc4 (NixOS 26.05.20260911.21a67dc), lastModified
// 1789114715. Sources, all agreeing on rev and narHash:
//   - github.com/maximilianpw/fleet, flake.lock at commit 3c8ec46b (node
//     "nixpkgs", locked github:NixOS/nixpkgs/21a67dc4, narHash as below), and
//     its docs/migration-baseline.md quoting the lock of the nix-config it came
//     from ("nixpkgs (nixos-26.05)");
//   - an unrelated repository's builtins.fetchTree pin of kooha 2.3.0 with the
//     same rev and narHash, and a third one's shell.nix whose fetchTarball
//     of .../archive/21a67dc4....tar.gz takes the same value as sha256 (found
//     through the code index; it did not name those two repositories).
func pins() []Pin {
	return []Pin{{
		Release: "26.05",
		Rev:     "21a67dc470149f337cecafbe965d8d252a390518",
		SHA256:  "sha256-ugpsyk3NM2s87vXfUiIIiibbJ4Pp0JPS5p/3mfs+q+c=",
		Date:    "2026-09-11",
		Pinned:  true,
	}}
}

// PinnedReleases lists the releases nixpi has a pin for, oldest first.
func PinnedReleases() []string {
	var rs []string
	for _, p := range pins() {
		rs = append(rs, p.Release)
	}
	return rs
}

// Nixpkgs resolves the config to the nixpkgs to install from: the user's
// nixpkgs_rev and nixpkgs_sha256 when set, else the release's pin.
func Nixpkgs(n config.NixOS) (Pin, error) {
	if n.NixpkgsRev != "" {
		return Pin{Release: n.Release, Rev: n.NixpkgsRev, SHA256: n.NixpkgsSHA256}, nil
	}
	for _, p := range pins() {
		if p.Release == n.Release {
			return p, nil
		}
	}
	return Pin{}, fmt.Errorf("nixos.release = %q has no nixpkgs pin in this nixpi (pinned: %v); use one of those, or set nixos.nixpkgs_rev and nixos.nixpkgs_sha256 to a nixos-%s commit and its hash", n.Release, PinnedReleases(), n.Release)
}
