# /etc/nixos/configuration.nix, written by nixpi from nixpi.toml. Once you edit
# it on the Pi, nixpi never overwrites it. Apply changes with
# `nixos-rebuild switch`.
{ config, lib, pkgs, ... }:

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

  # The release this system was first installed with; keep it when upgrading.
  system.stateVersion = "26.05";
}
