# stand-in of nixpkgs' installer/scan/not-detected.nix, for a
# hardware-configuration.nix that imports it from modulesPath.
{ lib, ... }:
{
  hardware.enableRedistributableFirmware = lib.mkDefault true;
}
