# /etc/nixos/configuration.nix, written by nixpi from nixpi.toml. Once you edit
# it on the Pi, nixpi never overwrites it. Apply changes with
# `nixos-rebuild switch`.
{ config, lib, pkgs, ... }:

{
  imports = [
    ./hardware-configuration.nix
    # nixos.extra_module from nixpi.toml, as written there:
    (
{ pkgs, ... }:
{
  # a comment with a ) in it
  environment.systemPackages = [ pkgs.git pkgs.htop ];
  environment.etc."motd".text = ''
    Welcome to ${"the"} Pi.
  '';
}
    )
  ];

  networking.hostName = "nixpi";
  time.timeZone = "UTC";
  i18n.defaultLocale = "en_US.UTF-8";
  console.keyMap = "us";

  users.users."pi" = {
    isNormalUser = true;
    extraGroups = [ "wheel" ];
    # The hash is in this root-only file, not in the world-readable Nix store.
    hashedPasswordFile = "/etc/nixos/secrets/pi.hashedPassword";
  };

  nix.settings = {
    experimental-features = [ "nix-command" "flakes" ];
    substituters = [ "https://cache.nixos.org" "https://nix-community.cachix.org" ];
    trusted-public-keys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" "nix-community.cachix.org-1:mB9FSh9qf2dCimDSUo8Zy7bkq5CX+/rkCWyvRCYg3Fs=" ];
  };

  # The release this system was first installed with; keep it when upgrading.
  system.stateVersion = "26.05";
}
