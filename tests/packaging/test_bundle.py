"""The frozen wallet: build the one-folder bundle with packaging/build.sh and run it.

The bundle is built once per run into pytest's temporary folder (never the
developer's dist/ or build/), then its ``--self-test`` runs offscreen: the
embedded node makes a block and a secret goes through the keyring backend the
frozen wallet picks. Where the Secret Service works for this interpreter (test.sh
runs pytest on a D-Bus session with GNOME Keyring), the frozen build must pick it
too: that proves keyring's entry points, secretstorage and jeepney made it into
the bundle. The bundle must stay within 120 MB.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from wallet.keys.backends import FILE_BACKEND_NAME, SYSTEM_BACKENDS, choose_backend

ROOT = Path(__file__).resolve().parents[2]
MAX_BUNDLE_BYTES = 120 * 1000 * 1000
BUILD_DEADLINE_S = 900
RUN_DEADLINE_S = 120
SAFE_BACKENDS = {name for name, _ in SYSTEM_BACKENDS} | {FILE_BACKEND_NAME}


def _size(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if not p.is_dir())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/xln-wallet/, built by the documented command into a temporary folder."""
    base = tmp_path_factory.mktemp("bundle")
    build = subprocess.run(
        [
            "bash",
            str(ROOT / "packaging" / "build.sh"),
            "--distpath",
            str(base / "dist"),
            "--workpath",
            str(base / "build"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_DEADLINE_S,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    assert "size:" in build.stdout
    assert "build time:" in build.stdout
    return base / "dist" / "xln-wallet"


def _executable(bundle: Path) -> Path:
    if sys.platform == "win32":
        return bundle / "xln-wallet-cli.exe"  # the windowed .exe has no stdout
    return bundle / "xln-wallet"


def test_bundle_is_within_size_budget(bundle: Path) -> None:
    size = _size(bundle)
    assert size <= MAX_BUNDLE_BYTES, f"bundle is {size / 1e6:.1f} MB"


def test_bundle_holds_what_the_wallet_loads_at_run_time(bundle: Path) -> None:
    internal = bundle / "_internal"
    assert (internal / "resources").is_dir()
    # keyring finds its backends through its entry points: its metadata must be there.
    [meta] = internal.glob("keyring-*.dist-info")
    assert "keyring.backends" in (meta / "entry_points.txt").read_text()
    plugins = internal / "PySide6" / "Qt" / "plugins"
    if sys.platform.startswith("linux"):
        platforms = {p.name for p in (plugins / "platforms").iterdir()}
        assert {"libqoffscreen.so", "libqxcb.so", "libqminimal.so"} <= platforms
        # The GTK theme would pull GTK in; the virtual keyboard, QtQuick.
        assert not (plugins / "platformthemes" / "libqgtk3.so").exists()
        assert not list(internal.rglob("libgtk-3*"))
        assert not list(internal.rglob("libQt6Quick*"))
    names = {p.name.split(".")[0] for p in (internal / "PySide6").iterdir()}
    assert {"QtCore", "QtGui", "QtWidgets", "QtSvg"} <= names
    assert not names & {"QtNetwork", "QtQml", "QtQuick", "QtDesigner", "QtPdf", "QtMultimedia"}
    assert not list(internal.rglob("*.qm")), "Qt translations should be left out"


def test_frozen_self_test_passes_with_a_safe_keyring(bundle: Path, tmp_path: Path) -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XLN_WALLET_DATA=str(tmp_path / "data"))
    run = subprocess.run(
        [str(_executable(bundle)), "--self-test"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_DEADLINE_S,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "self-test: ok" in run.stdout
    # The frozen Qt: platform plugin, fonts, style sheets and icons from resources/.
    assert "gui: ok (font " in run.stdout
    [line] = [ln for ln in run.stdout.splitlines() if ln.startswith("keyring backend: ")]
    backend = line.removeprefix("keyring backend: ")
    assert backend in SAFE_BACKENDS, output
    lowered = output.lower()
    assert "plaintext" not in lowered
    assert "fail" not in backend.lower()
    # Frozen, the wallet must find the same keyring as this interpreter does here.
    expected = choose_backend(tmp_path / "unfrozen", service="xln-signer-selftest").name
    assert backend == expected, output


def test_frozen_gui_shows_its_first_window(bundle: Path, tmp_path: Path) -> None:
    """The frozen app itself (not only its self-test): Qt, the theme, the vault and
    the onboarding window, offscreen on an empty data folder."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XLN_WALLET_READY_FILE="-")
    proc = subprocess.Popen(
        [str(_executable(bundle)), "--data", str(tmp_path / "data")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pool = ThreadPoolExecutor(1)  # readline with a deadline
    try:
        assert proc.stdout is not None
        line = pool.submit(proc.stdout.readline).result(timeout=RUN_DEADLINE_S)
        assert line.startswith("window onboarding "), line
        assert proc.poll() is None, "the window stays up"
    finally:
        proc.kill()  # first: it ends a readline still waiting
        _, err = proc.communicate(timeout=RUN_DEADLINE_S)
        pool.shutdown()
    assert "Traceback" not in err, err
