"""Replaces PyInstaller's QtGui hook: the same collection, minus the plugins we never load.

Filtering here, rather than in the spec after Analysis, matters: PyInstaller scans
every collected binary for its shared-library dependencies, so a plugin dropped only
afterwards would still have pulled its libraries in (the GTK platform theme pulls GTK
and its whole stack, the Qt virtual keyboard pulls QtQuick and QtQml, the TUIO touch
plugin pulls QtNetwork, the PDF image format pulls QtPdf).
"""

from __future__ import annotations

import os

from PyInstaller.utils.hooks.qt import add_qt6_dependencies

# Plugin kinds we keep, and for each either None (every plugin of that kind) or the
# name stems to keep. Kinds not listed are dropped (egldeviceintegrations, generic,
# wayland-*: the xcb platform serves Wayland sessions through XWayland).
_KEEP: dict[str, set[str] | None] = {
    # offscreen and minimal everywhere (tests, --self-test), xcb on Linux, cocoa on
    # macOS, windows (+ direct2d) on Windows.
    "platforms": {"qoffscreen", "qminimal", "qxcb", "qcocoa", "qwindows", "qdirect2d"},
    "platforms/darwin": None,
    # qgtk3 is the GTK theme: it alone drags in GTK; the portal theme is plain D-Bus.
    "platformthemes": {"qxdgdesktopportal"},
    "platforminputcontexts": {
        "composeplatforminputcontextplugin",
        "ibusplatforminputcontextplugin",
    },
    "imageformats": {"qsvg", "qico", "qjpeg", "qgif", "qicns"},
    "iconengines": None,
    "xcbglintegrations": None,
    "accessiblebridge": None,
    "styles": None,
}


def _stem(path: str) -> str:
    name = os.path.basename(path).split(".")[0]
    return name[3:] if name.startswith("lib") else name


def _keep(src: str, dest: str) -> bool:
    parts = dest.replace("\\", "/").split("/")
    if "plugins" not in parts:
        return True  # a library, not a plugin
    kind = "/".join(parts[parts.index("plugins") + 1 :])
    if kind not in _KEEP:
        return False
    stems = _KEEP[kind]
    return stems is None or _stem(src) in stems


hiddenimports, _binaries, _datas = add_qt6_dependencies(__file__)
binaries = [(src, dest) for src, dest in _binaries if _keep(src, dest)]
datas = _datas
