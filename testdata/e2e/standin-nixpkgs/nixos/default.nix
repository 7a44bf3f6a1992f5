# The stand-in NixOS (test data for nixpi's QEMU run, not NixOS): evaluates
# a configuration.nix as a module, with its imports, against the options in
# ./options.nix, and builds a toy toplevel with the real layout. Called as
# nixpkgs/nixos is: nix build --file <nixpkgs>/nixos --arg configuration FILE system
{ configuration, system ? builtins.currentSystem }:
let
  lib = import ../lib.nix;
  pkgs = import ../. { system = eval.config.nixpkgs.hostPlatform; };
  eval = lib.evalModules {
    modules = [
      configuration
      { nixpkgs.hostPlatform = lib.mkDefault system; }
    ];
    declarations = import ./options.nix { inherit lib pkgs; };
    specialArgs = { inherit pkgs; modulesPath = ./modules; };
  };
in
{
  inherit (eval) config options;
  inherit pkgs;
  system = import ./toplevel.nix { inherit lib pkgs; inherit (eval) config; };
}
