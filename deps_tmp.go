package deps

import (
	_ "github.com/BurntSushi/toml"
	_ "github.com/cavaliergopher/cpio"
	_ "github.com/diskfs/go-diskfs"
	_ "github.com/google/renameio/v2"
	_ "github.com/klauspost/compress/zstd"
	_ "github.com/schollz/progressbar/v3"
	_ "github.com/spf13/pflag"
	_ "github.com/ulikunitz/xz"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/term"
)
