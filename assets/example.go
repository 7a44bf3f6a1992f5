package assets

import _ "embed"

// ExampleConfig is the commented example install config that
// `nixpi config init` prints; firstboot/config's tests parse it.
//
//go:embed nixpi.example.toml
var ExampleConfig []byte
