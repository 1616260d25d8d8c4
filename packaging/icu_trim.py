"""Shrink the ICU data library that PySide6's Linux wheels ship (``libicudata.so.73``, 32 MB).

Qt 6 formats numbers, dates and locale names from its own CLDR tables, converts text
only between UTF-8/16 and Latin-1 (built into ICU, no tables), and reads time zones
from the system's tz files. What it takes from ICU's data is little: the root and
English resources, normalization, case and property data. This keeps those and drops
the rest (other locales' names, currencies and units, collation tailorings,
transliterators, legacy code-page tables, dictionary-based word breaking for CJK,
Thai, Lao, Khmer and Burmese), which is what ICU's own build-time data filter does.
A locale whose data is missing falls back to root: the behaviour of a filtered ICU.

The data is an ICU "common data" package (format ``CmnD``): a header, a table of
contents sorted by name, and the items. We copy the kept items into a new package
and link it into a shared library that exports the same symbol with the same
soname, so ``libicuuc`` loads it unchanged. Needs a C compiler (``cc``); Linux only.
"""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

_MAGIC = b"\xda\x27"
_FORMAT = b"CmnD"
_ALIGN = 16

# Item paths below "icudt73l/" that are dropped (prefix match).
_DROP_TREES = ("coll/", "translit/", "rbnf/", "curr/", "unit/", "lang/", "region/", "zone/")
# Trees where only root, English and the shared pool are kept (display names).
_LOCALE_RE = re.compile(r"^[a-z]{2,3}(_[A-Za-z0-9]+)*\.res$")
_KEPT_LOCALE_RE = re.compile(r"^(root|en|en_[A-Za-z0-9_]+|pool|res_index)\.res$")


def keep_item(name: str) -> bool:
    """Whether the item ``icudtNNl/<path>`` stays in the trimmed package."""
    path = name.split("/", 1)[1] if "/" in name else name
    if path.endswith(".cnv"):
        return False  # legacy code pages; Qt converts only UTF and Latin-1
    if path.startswith("brkitr/") and path.endswith(".dict"):
        return False  # dictionary word breaking for CJK and South-East Asian scripts
    if path.startswith(_DROP_TREES):
        leaf = path.rsplit("/", 1)[1]
        return bool(_KEPT_LOCALE_RE.match(leaf)) or not leaf.endswith(".res")
    leaf = path.rsplit("/", 1)[-1]
    if _LOCALE_RE.match(leaf):
        return bool(_KEPT_LOCALE_RE.match(leaf))
    return True  # root-level data: properties, normalization, supplemental, zoneinfo64


def extract_package(library: Path, symbol: str) -> bytes:
    """The bytes of the data package ``symbol`` in ``library`` (its start and size from nm)."""
    nm = ["nm", "-D", "-S", "--defined-only", str(library)]
    out = subprocess.run(nm, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[3] == symbol:
            size = int(fields[1], 16)
            break
    else:
        raise ValueError(f"{library.name} does not export {symbol}")
    blob = library.read_bytes()
    start = blob.find(_FORMAT) - 12
    while start >= 0 and blob[start + 2 : start + 4] != _MAGIC:
        start = blob.find(_FORMAT, start + 13) - 12
    if start < 0:
        raise ValueError(f"no ICU common data package (CmnD) in {library.name}")
    return blob[start : start + size]


def read_package(package: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A package's header and its (name, item bytes) in table-of-contents order."""
    if package[2:4] != _MAGIC or package[12:16] != _FORMAT:
        raise ValueError("not an ICU common data package")
    if package[8] != 0:
        raise ValueError("big-endian ICU data is not supported")
    (header_size,) = struct.unpack_from("<H", package, 0)
    toc = header_size
    (count,) = struct.unpack_from("<I", package, toc)
    entries = [struct.unpack_from("<II", package, toc + 4 + 8 * k) for k in range(count)]
    items: list[tuple[str, bytes]] = []
    for k, (name_off, data_off) in enumerate(entries):
        name_end = package.index(b"\0", toc + name_off)
        name = package[toc + name_off : name_end].decode("ascii")
        end = toc + entries[k + 1][1] if k + 1 < count else len(package)
        items.append((name, package[toc + data_off : end]))
    return package[:header_size], items


def write_package(header: bytes, items: list[tuple[str, bytes]]) -> bytes:
    """A common data package holding ``items`` (kept in their sorted order)."""
    count = len(items)
    names = b"".join(name.encode("ascii") + b"\0" for name, _ in items)
    toc_size = 4 + 8 * count
    data_start = toc_size + len(names)
    data_start += -(len(header) + data_start) % _ALIGN
    entries = []
    body = bytearray()
    name_off = toc_size
    for name, data in items:
        entries.append((name_off, data_start + len(body)))
        name_off += len(name) + 1
        body += data
        body += b"\0" * (-len(body) % _ALIGN)
    toc = struct.pack("<I", count) + b"".join(struct.pack("<II", n, d) for n, d in entries)
    padding = b"\xaa" * (data_start - toc_size - len(names))  # as ICU's pkgdata pads
    return header + toc + names + padding + bytes(body)


def trim(package: bytes) -> tuple[bytes, int, int]:
    """The trimmed package; and the item counts before and after."""
    header, items = read_package(package)
    kept = [(name, data) for name, data in items if keep_item(name)]
    return write_package(header, kept), len(items), len(kept)


def build_library(source: Path, out_dir: Path, cc: str = "cc") -> Path:
    """Write a trimmed copy of ``source`` (``libicudataNN``) into ``out_dir``; return its path."""
    match = re.search(r"libicudata\.so\.(\d+)", source.name)
    if not match:
        raise ValueError(f"not an ICU data library: {source.name}")
    major = match.group(1)
    package, _, _ = trim(extract_package(source, f"icudt{major}_dat"))
    out_dir.mkdir(parents=True, exist_ok=True)
    dat = out_dir / f"icudt{major}l.dat"
    dat.write_bytes(package)
    asm = out_dir / "icudata.S"
    asm.write_text(
        "\t.section .rodata\n"
        f"\t.globl icudt{major}_dat\n"
        f"\t.type icudt{major}_dat, @object\n"
        "\t.balign 16\n"
        f"icudt{major}_dat:\n"
        f'\t.incbin "{dat.name}"\n'
        f"\t.size icudt{major}_dat, .-icudt{major}_dat\n"
        '\t.section .note.GNU-stack,"",@progbits\n'
    )
    target = out_dir / source.name
    soname = f"-Wl,-soname,libicudata.so.{major}"
    link = [cc, "-shared", "-nostdlib", soname, "-o", str(target), asm.name]
    subprocess.run(link, cwd=out_dir, check=True)
    return target
