#!/usr/bin/env bash
# Creates .venv with a Python 3.12+ interpreter and installs the project into it.
# Usage: scripts/bootstrap.sh [EXTRAS]   (EXTRAS like "dev" or "gui,dev")
#        scripts/bootstrap.sh --print-python   (print the interpreter it would use, and exit)
# Idempotent: re-running only installs what changed in pyproject.toml.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
extras="${1:-}"

version_ok() { "$@" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }

# The interpreter: XLN_PYTHON when set; else the newest 3.12 (every wheel the project
# uses ships for it, and every figure in docs/PERFORMANCE.md was measured on it); only
# when there is no 3.12, the newest newer one (rusty-rlp has no wheel past 3.12, so the
# codec there runs on pyrlp's pure-Python backend).
find_python() {
    local c
    if [ -n "${XLN_PYTHON:-}" ] && version_ok "$XLN_PYTHON"; then echo "$XLN_PYTHON"; return; fi
    # pyenv installs that are not the default: plain `python3.12` fails through the shim,
    # so look for the interpreter binaries directly, newest first (each sort key carries
    # its own "r": a global -r does not reach keys that have their own "n").
    local root="${PYENV_ROOT:-$HOME/.pyenv}" installs=""
    if [ -d "$root/versions" ]; then
        installs="$(ls -1 "$root/versions" | grep -E '^3\.(1[2-9]|[2-9][0-9])(\.[0-9]+)?$' | sort -t. -k1,1nr -k2,2nr -k3,3nr)" || true
    fi
    for c in $(echo "$installs" | grep -E '^3\.12(\.|$)'); do
        if version_ok "$root/versions/$c/bin/python3"; then echo "$root/versions/$c/bin/python3"; return; fi
    done
    if command -v python3.12 >/dev/null 2>&1 && version_ok python3.12; then command -v python3.12; return; fi
    for c in python3.14 python3.13 python3; do
        if command -v "$c" >/dev/null 2>&1 && version_ok "$c"; then command -v "$c"; return; fi
    done
    for c in $installs; do
        if version_ok "$root/versions/$c/bin/python3"; then echo "$root/versions/$c/bin/python3"; return; fi
    done
    return 1
}

no_python() { echo "error: xln-signer needs Python 3.12 or newer; none was found" >&2; exit 1; }

if [ "$extras" = "--print-python" ]; then
    find_python || no_python
    exit 0
fi

# apt-get that waits for the dpkg lock while another apt or dpkg holds it (an
# unattended upgrade on a newcomer's machine) rather than failing at once.
APT_LOCK_TIMEOUT_S=600
apt_get() {
    local sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    echo "bootstrap: apt-get $1 (if another apt or dpkg holds the lock, waiting for it up to ${APT_LOCK_TIMEOUT_S} s)" >&2
    $sudo_cmd apt-get -o DPkg::Lock::Timeout="$APT_LOCK_TIMEOUT_S" "$@"
}

# System packages, Debian/Ubuntu only: installs those of PACKAGES that are missing.
ensure_debs() {
    local why="$1"; shift
    command -v dpkg-query >/dev/null 2>&1 || return 0
    local pkg missing=""
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        echo "bootstrap: installing $why:$missing" >&2
        apt_get update -qq && apt_get install -y -qq $missing
    fi
}

# Qt (the gui extra) needs these system libraries even offscreen, a font to draw
# text with, and the xcb set to open a real window on X11.
qt_libs="libgl1 libegl1 libxkbcommon0 libfontconfig1 libglib2.0-0 libdbus-1-3 fonts-dejavu-core"
xcb_libs="libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
    libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0"
if [[ "$extras" == *gui* || "$extras" == *dev* ]]; then
    ensure_debs "Qt's system libraries" $qt_libs $xcb_libs
fi
# The PyInstaller build (package extra) trims Qt's ICU data with a C compiler and nm.
if [[ "$extras" == *package* || "$extras" == *dev* ]]; then
    ensure_debs "a C compiler and binutils for the bundle build" gcc binutils
fi
# The tests run against a real Secret Service: GNOME Keyring on a private D-Bus session.
keyring_debs="gnome-keyring dbus dbus-daemon"
if [[ "$extras" == *dev* ]]; then
    ensure_debs "a Secret Service for the keyring tests" $keyring_debs
fi
# The GUI suite (tests/gui) drives the real wallet on a virtual X server under a
# window manager, with real key and mouse events, and takes screenshots.
gui_suite_debs="xvfb xdotool openbox imagemagick x11-utils tesseract-ocr tesseract-ocr-eng"
if [[ "$extras" == *dev* ]]; then
    ensure_debs "a virtual display, a window manager and X tools for the GUI suite" $gui_suite_debs
fi

if [ ! -x .venv/bin/python ] || ! version_ok .venv/bin/python; then
    py="$(find_python)" || no_python
    echo "bootstrap: using $py ($("$py" --version))" >&2
    rm -rf .venv
    "$py" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
fi

stamp=".venv/.installed-${extras:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    target="."
    [ -n "$extras" ] && target=".[${extras}]"
    .venv/bin/python -m pip install --quiet -e "$target"
    touch "$stamp"
fi
