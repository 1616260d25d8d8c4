#!/usr/bin/env bash
# Build the one-folder wallet bundle dist/xln-wallet/ from a clean build/ folder,
# then print its size and the build time.
#
#   packaging/build.sh [--distpath DIR] [--workpath DIR]
#
# Needs the `package` extra (pyinstaller) in .venv: scripts/bootstrap.sh dev, or
# pip install -e '.[package]'. Windows and macOS: see docs/PACKAGING.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

distpath="$here/dist"
workpath="$here/build"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --distpath) distpath="$2"; shift 2 ;;
        --workpath) workpath="$2"; shift 2 ;;
        *) echo "usage: $0 [--distpath DIR] [--workpath DIR]" >&2; exit 2 ;;
    esac
done

if [[ -x .venv/bin/pyinstaller ]]; then
    pyinstaller=.venv/bin/pyinstaller
elif [[ -x .venv/Scripts/pyinstaller.exe ]]; then
    pyinstaller=.venv/Scripts/pyinstaller.exe
else
    echo "pyinstaller is not in .venv: run scripts/bootstrap.sh dev (installs the package extra)" >&2
    exit 1
fi

rm -rf "$workpath" "$distpath/xln-wallet" "$distpath/xln-wallet.app"
start=$(date +%s.%N)
"$pyinstaller" --noconfirm --clean --log-level WARN \
    --distpath "$distpath" --workpath "$workpath" packaging/xln-wallet.spec
end=$(date +%s.%N)

bundle="$distpath/xln-wallet"
size_bytes=$(du -sb "$bundle" | cut -f1)
awk -v b="$size_bytes" -v s="$start" -v e="$end" -v p="$bundle" 'BEGIN {
    printf "bundle: %s\nsize: %.1f MB (%d bytes)\nbuild time: %.1f s\n", p, b / 1e6, b, e - s
}'
