package config

import (
	"bytes"

	"github.com/nixpi/nixpi/assets"
)

// Example is the commented example config (`nixpi config init`). It passes
// Parse, and the tests keep it that way.
func Example() []byte { return bytes.Clone(assets.ExampleConfig) }
