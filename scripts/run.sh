#!/usr/bin/env bash
# The main job: the desktop wallet, with its light node embedded in the same process
# (data in the platform's application-data folder). Extra arguments go to `xln-wallet`,
# e.g. scripts/run.sh --node ws://HOST:PORT --token-file F   (a remote node instead)
#      scripts/run.sh --data ./wallet-data              (another data folder)
# With no display (a server, CI), Qt draws offscreen: QT_QPA_PLATFORM=offscreen.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/scripts/bootstrap.sh" gui
if [ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ "$(uname -s)" = "Linux" ]; then
    echo "run.sh: no display found; the window is drawn offscreen (set DISPLAY to see it)" >&2
    export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
fi
exec "$here/.venv/bin/xln-wallet" "$@"
