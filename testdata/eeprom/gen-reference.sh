#!/bin/sh
# Regenerates reference.sha256: what Raspberry Pi's own rpi-eeprom-config
# writes for each test image and config, to check nixpi byte for byte.
# Not run by the tests; run it by hand when the test data changes:
#   testdata/eeprom/gen-reference.sh /path/to/rpi-eeprom/rpi-eeprom-config
# Needs python3 with Cryptodome (Debian: python3-pycryptodome) for --pubkey.
# Reference used for the committed file: raspberrypi/rpi-eeprom 86759b0.
set -eu
tool=$1
here=$(cd "$(dirname "$0")" && pwd)
data=${2:-$here/../../../shared/testdata/rpi-eeprom}
python=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: > "$tmp/empty.txt"

ref() { # ref CASE IMAGE ARGS...
	case_=$1 image=$2
	shift 2
	"$python" "$tool" "$@" --out "$tmp/out.bin" "$data/$image"
	printf '%s  %s  %s\n' "$(sha256sum < "$tmp/out.bin" | cut -d' ' -f1)" "$image" "$case_"
}

{
	for img in "$data"/images/pieeprom-*.bin; do
		img=images/$(basename "$img")
		ref boot-order "$img" --config "$here/bootconf-boot-order.txt"
		ref 4076 "$img" --config "$data/bootconf-4076.txt"
		ref empty "$img" --config "$tmp/empty.txt"
		if "$python" "$tool" "$data/$img" >/dev/null 2>&1 &&
			LC_ALL=C grep -q bootconf.sig "$data/$img"; then
			ref signed "$img" --config "$data/signed/bootconf.txt" \
				--digest "$data/signed/bootconf.sig" --pubkey "$data/signed/public.pem"
		fi
	done
	ref boot-order signed/pieeprom-signed.bin --config "$here/bootconf-boot-order.txt"
	ref signed signed/pieeprom-signed.bin --config "$data/signed/bootconf.txt" \
		--digest "$data/signed/bootconf.sig" --pubkey "$data/signed/public.pem"
} > "$here/reference.sha256"
