#!/usr/bin/env bash
# The main job: a node with simulated traffic (one increment every 100 ms), data in ./data.
# Extra arguments go to `xln-node run`, e.g. scripts/run.sh --port 8765
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/scripts/bootstrap.sh"
exec "$here/.venv/bin/xln-node" run --data "${XLN_DATA:-$here/data}" --simulate "$@"
