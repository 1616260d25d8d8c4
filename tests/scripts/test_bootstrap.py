"""scripts/bootstrap.sh: which Python it picks among pyenv installs (``--print-python``).

The pyenv root is a temporary folder of stand-in interpreters, and PATH holds only
the tools the script needs, so no interpreter of this machine can be found first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

BOOTSTRAP = Path(__file__).resolve().parents[2] / "scripts" / "bootstrap.sh"
TOOLS = ("dirname", "ls", "grep", "sort")


def fake_python(root: Path, version: str, *, ok: bool = True) -> Path:
    """``versions/VERSION/bin/python3``: passes bootstrap's 3.12+ check when ``ok``."""
    path = root / "versions" / version / "bin" / "python3"
    path.parent.mkdir(parents=True)
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then echo "Python {version}"; fi\n'
        f"exit {0 if ok else 1}\n"
    )
    path.chmod(0o755)
    return path


def print_python(tmp_path: Path, root: Path) -> subprocess.CompletedProcess[str]:
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in TOOLS:
        found = shutil.which(name)
        assert found is not None, name
        os.symlink(found, tools / name)
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run(
        [bash, str(BOOTSTRAP), "--print-python"],
        env={"PATH": str(tools), "PYENV_ROOT": str(root), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("installed", "chosen"),
    [
        # The newest 3.12 over anything newer: rusty-rlp's wheels stop at 3.12.
        (("3.12.1", "3.12.10", "3.13.0"), "3.12.10"),
        (("3.12.1", "3.12.10", "3.12.9"), "3.12.10"),
        (("3.12", "3.12.2"), "3.12.2"),
        # No 3.12: the newest newer one.
        (("3.13.0", "3.14.1", "3.13.9"), "3.14.1"),
    ],
)
def test_picks_the_newest_312_then_the_newest_newer(
    tmp_path: Path, installed: tuple[str, ...], chosen: str
) -> None:
    root = tmp_path / "pyenv"
    paths = {version: fake_python(root, version) for version in installed}
    result = print_python(tmp_path, root)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{paths[chosen]}\n"


def test_skips_older_pythons_and_ones_that_fail_the_check(tmp_path: Path) -> None:
    root = tmp_path / "pyenv"
    fake_python(root, "3.11.9")  # too old: not even asked
    fake_python(root, "3.14.0", ok=False)  # a broken install
    chosen = fake_python(root, "3.12.3")
    result = print_python(tmp_path, root)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{chosen}\n"


def test_a_broken_312_falls_through_to_a_newer_one(tmp_path: Path) -> None:
    root = tmp_path / "pyenv"
    fake_python(root, "3.12.5", ok=False)
    chosen = fake_python(root, "3.13.1")
    result = print_python(tmp_path, root)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{chosen}\n"


def test_no_python_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "pyenv"
    fake_python(root, "3.11.9")
    result = print_python(tmp_path, root)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "error: xln-signer needs Python 3.12 or newer; none was found\n"
