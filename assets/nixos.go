package assets

import "embed"

// NixOS holds the templates of the configuration.nix and
// hardware-configuration.nix that the device writes and `nixpi config nixos`
// shows; firstboot/nixos renders them.
//
//go:embed nixos/*.nix.tmpl
var NixOS embed.FS
