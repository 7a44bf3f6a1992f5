// Package assets holds what nixpi embeds: templates, the example config, and
// the device binaries that `make build` cross-compiles into assets/device/.
package assets

// Version is nixpi's version; it is recorded in every card's manifest and
// journal, so it is a constant rather than something read from git.
const Version = "0.1.0"
