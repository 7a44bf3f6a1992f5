# /etc/nixos/configuration.nix, written by nixpi from nixpi.toml. Once you edit
# it on the Pi, nixpi never overwrites it. Apply changes with
# `nixos-rebuild switch`.
{ config, lib, pkgs, ... }:

let
  # The nixpkgs this system is built from: the one nixpi pinned for the
  # install, later the release channel's (or yours, with -I nixpkgs=...).
  # builtins.storePath keeps a store path in the system's closure without
  # copying it again; a pure evaluation (a flake) allows no storePath.
  nixpkgsPath = toString pkgs.path;
  nixpkgs =
    if builtins ? currentSystem && lib.hasPrefix "${builtins.storeDir}/" nixpkgsPath
    then builtins.storePath nixpkgsPath
    else nixpkgsPath;
in
{
  imports = [
    ./hardware-configuration.nix
  ];

  networking.hostName = "nixpi";
  time.timeZone = "UTC";
  i18n.defaultLocale = "en_US.UTF-8";
  console.keyMap = "us";

  nix.settings = {
    experimental-features = [ "nix-command" "flakes" ];
    substituters = [ "https://cache.nixos.org" ];
    trusted-public-keys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
    # On a Pi with 2 GiB of memory or less, nixpi adds here:
    #   max-jobs = 1;
    #   cores = 1;
  };

  # Where nixos-rebuild finds nixpkgs. nixpi installed this system from a
  # pinned nixpkgs, without a channel: until `nixos-rebuild switch --upgrade`
  # (or `nix-channel --update`) has fetched the release's channel, <nixpkgs>
  # is the nixpkgs this system was built from, then the channel (Nix skips
  # the channel's entry, with a warning, while it does not exist).
  nix.nixPath = lib.mkDefault [
    "nixpkgs=/nix/var/nix/profiles/per-user/root/channels/nixos"
    "nixpkgs=${nixpkgs}"
    "nixos-config=/etc/nixos/configuration.nix"
    "/nix/var/nix/profiles/per-user/root/channels"
  ];
  # The channel `nixos-rebuild switch --upgrade` follows: this release's
  # (written to /root/.nix-channels when that file does not exist yet).
  system.defaultChannel = lib.mkDefault "https://nixos.org/channels/nixos-26.05";

  # The release this system was first installed with; keep it when upgrading.
  system.stateVersion = "26.05";
}
