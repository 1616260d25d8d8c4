#!/usr/bin/env bash
# The whole test suite. Extra arguments go to pytest.
#
# pytest runs inside a private D-Bus session (dbus-run-session) with an unlocked
# GNOME Keyring serving the Secret Service, so the keyring tests use a real
# system keyring. That keyring lives in a temporary folder, removed afterwards;
# the daemon ends with the session.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ -z "${XLN_TEST_SESSION:-}" ]; then
    "$here/scripts/bootstrap.sh" dev
    if command -v dbus-run-session >/dev/null 2>&1 && command -v gnome-keyring-daemon >/dev/null 2>&1; then
        export XLN_TEST_SESSION=1
        exec dbus-run-session -- "$here/scripts/test.sh" "$@"
    fi
    echo "test.sh: dbus-run-session or gnome-keyring-daemon is missing (Debian: gnome-keyring dbus" \
        "dbus-daemon); the Secret Service tests will fail" >&2
    cd "$here"
    exec .venv/bin/python -m pytest "$@"
fi

# Inside the private session.
cd "$here"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/xln-test-keyring.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
mkdir -m 700 "$scratch/run" "$scratch/data"
# --unlock reads the login keyring's password on stdin (and creates that keyring);
# it only guards this throwaway keyring.
daemon_env="$(printf '%s' "xln-test-keyring" \
    | XDG_RUNTIME_DIR="$scratch/run" XDG_DATA_HOME="$scratch/data" \
      gnome-keyring-daemon --unlock --components=secrets)"
# Some versions print variables to export (GNOME_KEYRING_CONTROL=..., SSH_AUTH_SOCK=...).
while IFS= read -r line; do
    if [[ "$line" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then
        export "${line?}"
    fi
done <<<"$daemon_env"

status=0
.venv/bin/python -m pytest "$@" || status=$?
exit "$status"
