package eeprom

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

// Digest returns the .sig file for a staged update image: its sha256 in
// lowercase hex, then "ts: <unix seconds>". The bootloader skips an update
// whose .sig has no ts line.
func Digest(image []byte, ts int64) []byte {
	sum := sha256.Sum256(image)
	out := make([]byte, 0, 64+1+4+20+1)
	out = append(out, hex.EncodeToString(sum[:])...)
	out = append(out, "\nts: "...)
	out = strconv.AppendInt(out, ts, 10)
	return append(out, '\n')
}
