#!/usr/bin/env bash
# Does every runtime dependency ship a CPython 3.12 wheel for Windows AMD64 and macOS
# (x86_64, arm64), so nothing is compiled on a build machine? Prints a Markdown table
# (docs/PACKAGING.md holds the last result). Asks PyPI through pip, one resolution per
# package and platform, reading only the wheel's metadata (pip --dry-run).
#
#   packaging/check-wheels.sh [PKG ...]
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pip="$here/.venv/bin/pip"
packages=("$@")
if [[ ${#packages[@]} -eq 0 ]]; then
    packages=(PySide6-Essentials shiboken6 qasync keyring mnemonic platformdirs plyvel-next
              pyblst py-ecc rlp rusty-rlp websockets eth-hash pycryptodome safe-pysha3
              pyinstaller secretstorage jeepney cryptography)
fi
# macOS 14 is the oldest the PySide6 we use supports on both architectures (its
# wheels say macosx_13_0 for x86_64 / arm64 through universal2; see docs/PACKAGING.md).
platforms=(win_amd64 macosx_14_0_x86_64 macosx_14_0_arm64)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

printf '| package |'; for plat in "${platforms[@]}"; do printf ' %s |' "$plat"; done; echo
printf '|---|'; for _ in "${platforms[@]}"; do printf -- '---|'; done; echo
for pkg in "${packages[@]}"; do
    # The version this .venv builds with, when installed; else the newest.
    version=$("$pip" show "$pkg" 2>/dev/null | sed -n 's/^Version: //p')
    spec="$pkg${version:+==$version}"
    row="| $spec |"
    for plat in "${platforms[@]}"; do
        report="$tmp/$pkg-$plat.json"
        if "$pip" install --quiet --dry-run --ignore-installed --no-deps --only-binary=:all: \
            --platform "$plat" --python-version 3.12 --implementation cp \
            --target "$tmp/t" --report "$report" "$spec" >"$tmp/log" 2>&1; then
            wheel=$("$here/.venv/bin/python" -c 'import json,sys; r=json.load(open(sys.argv[1]))["install"][0]; print(r["download_info"]["url"].rsplit("/",1)[-1])' "$report")
            row+=" ${wheel} |"
        else
            row+=" **none** |"
        fi
    done
    echo "$row"
done
