#!/usr/bin/env python3
"""Independent reader for Raspberry Pi 4 bootloader EEPROM images.

Written from the format description in DESIGN.md section 3 (not from any
other implementation), so nixpi's Go code can be checked against a second
reading of the same bytes:

  * the image is 512 KiB: a chain of sections, each a big-endian
    u32 magic and u32 length; the next header is at align8(offset+8+length);
  * a header is valid iff magic & 0xFFFFF00F == 0x55AAF00F; the chain stops
    at a magic of 0 or 0xFFFFFFFF;
  * 0x55AAF11F is a modifiable file: name[12] NUL-padded, 4 zero bytes, then
    data; length = 16 + len(data).

Usage: eeprom_reader.py IMAGE [ORIGINAL]
       eeprom_reader.py --many IMAGE...
Prints JSON: the sections, bootconf.txt, its first BOOT_ORDER value, and, if
ORIGINAL is given, the byte ranges where IMAGE differs from ORIGINAL. With
--many, a JSON list with one such object per IMAGE.
Exits 1 on a malformed image.
"""

import json
import sys

IMAGE_SIZE = 512 * 1024
HEADER_MASK = 0xFFFFF00F
HEADER_MAGIC = 0x55AAF00F
FILE_MAGIC = 0x55AAF11F


def be32(data, at):
    return int.from_bytes(data[at:at + 4], "big")


def sections(data):
    found = []
    at = 0
    while at + 8 <= len(data):
        magic, length = be32(data, at), be32(data, at + 4)
        if magic in (0, 0xFFFFFFFF):
            return found
        if magic & HEADER_MASK != HEADER_MAGIC:
            raise ValueError("bad magic %#010x at %d" % (magic, at))
        if at + 8 + length > len(data):
            raise ValueError("section at %d overruns the image" % at)
        entry = {"magic": "%#010x" % magic, "offset": at, "length": length}
        if magic == FILE_MAGIC:
            raw_name = data[at + 8:at + 20]
            entry["name"] = raw_name.split(b"\0", 1)[0].decode("ascii")
            entry["reserved_zero"] = data[at + 20:at + 24] == b"\0\0\0\0"
            entry["data_start"] = at + 24
            entry["data_end"] = at + 8 + length
        found.append(entry)
        at = (at + 8 + length + 7) // 8 * 8
    raise ValueError("chain runs off the end of the image")


def diff_ranges(a, b):
    """Returns [start, end) ranges where a and b differ, found 4 KiB at a time."""
    ranges, start = [], None
    block = 4096
    for base in range(0, len(a), block):
        if a[base:base + block] == b[base:base + block]:
            if start is not None:
                ranges.append([start, base])
                start = None
            continue
        for i in range(base, min(base + block, len(a))):
            if a[i] != b[i]:
                if start is None:
                    start = i
            elif start is not None:
                ranges.append([start, i])
                start = None
    if start is not None:
        ranges.append([start, len(a)])
    return ranges


def read_image(path, original=None):
    data = open(path, "rb").read()
    if len(data) != IMAGE_SIZE:
        raise ValueError("%s: image is %d bytes, want %d" % (path, len(data), IMAGE_SIZE))
    secs = sections(data)
    conf = [s for s in secs if s.get("name") == "bootconf.txt"]
    if not conf:
        raise ValueError("%s: no bootconf.txt" % path)
    text = data[conf[0]["data_start"]:conf[0]["data_end"]]
    boot_order = None
    for line in text.decode("utf-8").splitlines():
        if line.startswith("BOOT_ORDER="):
            boot_order = line[len("BOOT_ORDER="):]
            break
    out = {
        "sections": secs,
        "bootconf": text.decode("utf-8"),
        "boot_order": boot_order,
        # What follows the last section up to the reserved last 4 KiB must be
        # erased flash.
        "erased_after_chain": erased(data, secs[-1]["offset"] + 8 + secs[-1]["length"], IMAGE_SIZE - 4096),
    }
    if original is not None:
        out["differs"] = diff_ranges(open(original, "rb").read(), data)
    return out


def erased(data, start, end):
    return data[start:end] == b"\xff" * max(0, end - start)


def main(argv):
    try:
        if len(argv) > 1 and argv[1] == "--many":
            out = [read_image(path) for path in argv[2:]]
        else:
            out = read_image(argv[1], argv[2] if len(argv) > 2 else None)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 1
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
