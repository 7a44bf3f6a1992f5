# The stand-in nixpkgs' lib: the part of nixpkgs' lib and module system that
# nixpi's generated configuration.nix and hardware-configuration.nix use.
# Test data for the QEMU run, not nixpkgs: definitions are merged by the
# option declarations in nixos/options.nix, with priorities (mkDefault,
# mkForce, mkOverride), conditions (mkIf) and mkMerge, and the same errors
# for an undeclared option or a wrongly typed value.
let
  inherit (builtins) attrNames concatLists concatStringsSep elem filter foldl' head isAttrs
    isBool isFunction isInt isList isPath isString length listToAttrs map tail;

  mkOverride = priority: content: { _type = "override"; inherit priority content; };
  showPath = path: concatStringsSep "." path;

  unique = l: foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ] l;
  genAttrs = names: f: listToAttrs (map (n: { name = n; value = f n; }) names);
  mapAttrs = builtins.mapAttrs;
  optional = c: x: if c then [ x ] else [ ];
  optionals = c: l: if c then l else [ ];
  optionalString = c: s: if c then s else "";
  concatMapStrings = f: l: concatStringsSep "" (map f l);
  concatMapStringsSep = sep: f: l: concatStringsSep sep (map f l);
  mapAttrsToList = f: a: map (n: f n a.${n}) (attrNames a);
  hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
  escapeShellArg = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString s) + "'";
  filterAttrs = pred: a: listToAttrs (map (n: { name = n; value = a.${n}; }) (filter (n: pred n a.${n}) (attrNames a)));

  # The types nixos/options.nix declares with, and how each merges several
  # definitions of the same priority.
  types = {
    bool = { name = "boolean"; check = isBool; merge = mergeEqual; };
    int = { name = "signed integer"; check = isInt; merge = mergeEqual; };
    str = { name = "string"; check = isString; merge = mergeEqual; };
    nullOrStr = { name = "null or string"; check = v: v == null || isString v; merge = mergeEqual; };
    lines = { name = "strings concatenated with \"\\n\""; check = isString; merge = _: vs: concatStringsSep "\n" vs; };
    listOf = { name = "list"; check = isList; merge = _: vs: concatLists vs; };
    # nix.settings: free-form, lists concatenated, other values must agree.
    settings = {
      name = "Nix settings";
      check = isAttrs;
      merge = path: vs: builtins.zipAttrsWith (n: xs:
        if builtins.all isList xs then concatLists xs else mergeEqual (path ++ [ n ]) xs) vs;
    };
    raw = { name = "raw value"; check = _: true; merge = mergeEqual; };
    # A free-form attribute set (unitConfig, serviceConfig, environment):
    # merged key by key, the values of a key must agree.
    attrs = {
      name = "attribute set";
      check = isAttrs;
      merge = path: vs: builtins.zipAttrsWith (n: xs: mergeEqual (path ++ [ n ]) xs) vs;
    };
  };

  mergeEqual = path: vs:
    if length (unique vs) == 1 then head vs
    else throw "stand-in nixpkgs: The option `${showPath path}' has conflicting definition values.";

  mkOption = { type, default ? null, hasDefault ? default != null }: { _option = true; inherit type default hasDefault; };

  # Definitions of an option, with their priorities (100 when none is given).
  flattenLeaf = prio: def:
    let t = def._type or null; in
    if t == "merge" then concatLists (map (flattenLeaf prio) def.contents)
    else if t == "if" then (if def.condition then flattenLeaf prio def.content else [ ])
    else if t == "override" then flattenLeaf def.priority def.content
    else [ { value = def; inherit prio; } ];

  # Definitions of a group of options: mkIf and mkOverride move down to each
  # attribute, as the module system pushes them down.
  pushDown = path: def:
    let t = def._type or null; in
    if t == "merge" then concatLists (map (pushDown path) def.contents)
    else if t == "if" then map (mapAttrs (_: v: { _type = "if"; inherit (def) condition; content = v; })) (pushDown path def.content)
    else if t == "override" then map (mapAttrs (_: v: mkOverride def.priority v)) (pushDown path def.content)
    else if isAttrs def then [ def ]
    else throw "stand-in nixpkgs: The option `${showPath path}' is a set of options, but a definition of it is not an attribute set.";

  mergeOption = decl: defs: path:
    let
      all = concatLists (map (flattenLeaf 100) defs);
      best = foldl' (m: d: if d.prio < m then d.prio else m) 9999 all;
      kept = map (d: d.value) (filter (d: d.prio == best) all);
      checked = map (v: if decl.type.check v then v
        else throw "stand-in nixpkgs: A definition for option `${showPath path}' is not of type `${decl.type.name}'.") kept;
    in
    if kept == [ ] then
      (if decl.hasDefault then decl.default
       else throw "stand-in nixpkgs: The option `${showPath path}' is used but not defined.")
    else decl.type.merge path checked;

  # Merges definitions by the declarations: a declared group merges attribute
  # by attribute, { _attrsOf = decl; } is a set of named submodules, an
  # option merges its values by its type.
  mergeDecl = decl: defs: path:
    if decl._option or false then mergeOption decl defs path
    else
      let
        groups = concatLists (map (pushDown path) defs);
        names = unique (concatLists (map attrNames groups));
        defsOf = n: map (g: g.${n}) (filter (g: g ? ${n}) groups);
      in
      if decl ? _attrsOf then genAttrs names (n: mergeDecl decl._attrsOf (defsOf n) (path ++ [ n ]))
      else
        let
          unknown = filter (n: !(decl ? ${n})) names;
        in
        if unknown != [ ] then
          throw "stand-in nixpkgs: The option `${showPath (path ++ [ (head unknown) ])}' does not exist."
        else mapAttrs (n: d: mergeDecl d (defsOf n) (path ++ [ n ])) decl;

  # A module is a path, a function of the module arguments, or an attribute
  # set; its imports are modules too. The result is every definition set.
  collectModules = args: m:
    let
      loaded = if isPath m || isString m then import m else m;
      value = if isFunction loaded then loaded args else loaded;
      # { imports; options; config; } or the shorthand: definitions only.
      body = if value ? config || value ? options then value.config or { }
        else builtins.removeAttrs value [ "imports" "_file" "key" ];
    in
    [ body ] ++ concatLists (map (collectModules args) (value.imports or [ ]));

  # The stand-in of lib.evalModules: the fixed point of the merged
  # definitions, every module seeing the final config.
  evalModules = { modules, declarations, specialArgs ? { } }:
    let
      args = { inherit config; lib = self; options = declarations; } // specialArgs;
      config = mergeDecl declarations (concatLists (map (collectModules args) modules)) [ ];
    in
    { inherit config; options = declarations; };

  self = {
    inherit mkOverride mkOption types evalModules genAttrs mapAttrs optional optionals optionalString
      concatMapStrings concatMapStringsSep mapAttrsToList unique hasPrefix escapeShellArg filterAttrs;
    mkDefault = mkOverride 1000;
    mkForce = mkOverride 50;
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    trivial.revision = builtins.readFile ./.git-revision;
    trivial.release = builtins.readFile ./.version;
    version = builtins.readFile ./.version;
  };
in
self
