#!/usr/bin/env bash
# The whole test suite. Extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/scripts/bootstrap.sh" dev
cd "$here"
exec .venv/bin/python -m pytest "$@"
