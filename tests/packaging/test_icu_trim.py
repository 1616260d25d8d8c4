"""packaging/icu_trim.py: the ICU data package is rewritten exactly, and Qt works on the cut.

The last test loads the trimmed library in place of PySide6's (LD_PRELOAD: a
library with the same soname satisfies libicuuc's dependency) and compares what
Qt computes with ICU's help against the full data: collation, number formatting,
case mapping, time-zone names and the layout of mixed-script text.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "packaging"))
import icu_trim

# PySide6's folder, found without importing Qt here (only wallet/qt.py imports it).
_PYSIDE = importlib.util.find_spec("PySide6")
assert _PYSIDE is not None
assert _PYSIDE.origin is not None
QT_LIB = Path(_PYSIDE.origin).parent / "Qt" / "lib"
PROBE = """
from PySide6.QtCore import QCollator, QDateTime, QLocale, QTimeZone
from PySide6.QtWidgets import QApplication, QLabel
app = QApplication([])
words = ["b", "\\u00e4", "a", "z", "\\u00f6", "o"]
print(sorted(words, key=lambda w: [QCollator(QLocale("de_DE")).compare(w, x) for x in words]))
print(QLocale("de_DE").toString(1234567.5), QLocale("tr_TR").toUpper("i"))
print(QTimeZone(b"Europe/Berlin").displayName(QDateTime(2024, 1, 1, 0, 0, 0)))
label = QLabel("Hello \\u0e20\\u0e32\\u0e29\\u0e32\\u0e44\\u0e17\\u0e22 \\u65e5\\u672c\\u8a9e")
label.setWordWrap(True)
label.resize(40, 200)
print(label.sizeHint().width(), label.heightForWidth(40))
import sys
sys.stderr.write(open("/proc/self/maps").read())  # which libicudata was loaded
"""


def test_keep_rules() -> None:
    keep = icu_trim.keep_item
    for name in ["root.res", "en_GB.res", "pool.res", "uts46.nrm", "ulayout.icu", "zoneinfo64.res"]:
        assert keep(f"icudt73l/{name}"), name
    for name in ["coll/root.res", "coll/ucadata.icu", "lang/en.res", "brkitr/line.brk"]:
        assert keep(f"icudt73l/{name}"), name
    for name in ["de.res", "ja_JP.res", "coll/de.res", "lang/fr.res", "ibm-943_P15A-2003.cnv"]:
        assert not keep(f"icudt73l/{name}"), name
    assert not keep("icudt73l/brkitr/cjdict.dict")


def test_package_round_trip_is_byte_exact() -> None:
    package = icu_trim.extract_package(QT_LIB / "libicudata.so.73", "icudt73_dat")
    header, items = icu_trim.read_package(package)
    assert icu_trim.write_package(header, items) == package
    trimmed, before, after = icu_trim.trim(package)
    _, kept = icu_trim.read_package(trimmed)
    assert len(kept) == after < before
    assert dict(kept) == {name: data for name, data in items if icu_trim.keep_item(name)}
    assert len(trimmed) < len(package) / 4


def test_qt_behaves_the_same_on_the_trimmed_data(tmp_path: Path) -> None:
    library = icu_trim.build_library(QT_LIB / "libicudata.so.73", tmp_path)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    full = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    env["LD_PRELOAD"] = str(library)
    cut = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    assert str(library) in cut.stderr
    assert str(library) not in full.stderr
    assert cut.stdout == full.stdout
    assert cut.stdout.count("\n") == 4
