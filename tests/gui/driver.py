"""A person at an X display: the GUI suite's driver.

:class:`Display` starts Xvfb on a free display number and the openbox window
manager on it. :class:`App` starts the real ``xln-wallet`` there (its own data
folder, its embedded node as a child process, the system keyring of the test
session's D-Bus) and acts on it as a person does: through the X server, with
real key and mouse events from ``xdotool``, typing about ten keys a second. The
app runs as a person runs it: no test-only option, no hook (the start milestones
of ``XLN_WALLET_READY_FILE``, which the cold-start benchmark reads too, say when
the main window shows).

Finding things, most robust first: the keyboard (Enter, Tab, the windows' Alt
accelerators and shortcuts) rather than a click; windows by their titles
(``xdotool search --all --pid --name``); and only then the screen, read with
``tesseract`` (words and their boxes, :meth:`App.read`) from a screenshot made
plain first (grey, enlarged, black and white: :func:`ocr_ready`). The suite
checks that words are shown, never pixels; :meth:`App.click_text` clicks where
words are (a list's row), and the recovery phrase is read off the screen as a
person writes it down. White text on a coloured button does not read well: such
buttons are pressed from the keyboard.

Every wait is on a condition with a deadline (:func:`until`); the only sleeps
are a person's pauses between actions (:data:`PAUSE_S`) and the poll's period.
Screenshots of each step go to ``test-artifacts/gui/<test>/NN-step.png``
(:class:`Shots`; git-ignored).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "gui"
TOOLS = {
    "Xvfb": "xvfb",
    "openbox": "openbox",
    "xdotool": "xdotool",
    "xprop": "x11-utils",
    "import": "imagemagick",
    "convert": "imagemagick",
    "tesseract": "tesseract-ocr",
}
KEY_DELAY_MS = 110  # between two keys, as a person types
PAUSE_S = 0.6  # a person's pause between two actions
WAIT_S = 60.0
SCREEN = "1280x800x24"


class GuiError(AssertionError):
    """Something a person would have seen go wrong (or a tool missing)."""


def missing_tools() -> list[str]:
    """The display tools this suite needs that are not installed, with their packages."""
    return [f"{tool} (Debian: {deb})" for tool, deb in TOOLS.items() if shutil.which(tool) is None]


def checkout_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment with this checkout first on ``PYTHONPATH``: ``.venv`` may be
    shared by several worktrees, and its editable install points at whichever one
    installed it last, so ``.venv/bin/xln-wallet`` alone could run another tree's code."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def until[T](what: str, check: Callable[[], T | None], timeout_s: float = WAIT_S) -> T:
    """Poll ``check`` until it returns something other than None or False."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise GuiError(f"gave up after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)  # the poll's period, not a wait for the thing itself


def pause(seconds: float = PAUSE_S) -> None:
    """A person's pause between actions."""
    time.sleep(seconds)


class Display:
    """Xvfb on a free display number, with openbox managing its windows."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.number = self._free_number()
        self.name = f":{self.number}"
        self.procs: list[subprocess.Popen[bytes]] = []

    @staticmethod
    def _free_number() -> int:
        for n in range(90, 200):
            if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
                return n
        raise GuiError("no free X display number between :90 and :199")

    @property
    def env(self) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")
        }
        env["DISPLAY"] = self.name
        env["QT_QPA_PLATFORM"] = "xcb"
        return checkout_env(env)

    def _spawn(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        out = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # -noreset: by default Xvfb resets when its last client leaves, and the probe
        # below is its first client; openbox, connecting during the reset, failed.
        xvfb = self._spawn(
            "xvfb", "Xvfb", self.name, "-screen", "0", SCREEN, "-nolisten", "tcp", "-noreset"
        )
        until(
            f"Xvfb on {self.name}",
            lambda: (
                self._fails_early(xvfb, "Xvfb") or self.x("xprop", "-root", check=False) is not None
            ),
            20,
        )
        wm = self._spawn("openbox", "openbox", "--sm-disable")
        until(
            "openbox to manage the display",
            lambda: (
                self._fails_early(wm, "openbox")
                or "window id"
                in (self.x("xprop", "-root", "_NET_SUPPORTING_WM_CHECK", check=False) or "")
            ),
            20,
        )

    def _fails_early(self, proc: subprocess.Popen[bytes], name: str) -> bool:
        if proc.poll() is not None:
            log = (self.log_dir / f"{name.lower()}.log").read_text(errors="replace")[-2000:]
            raise GuiError(f"{name} exited with code {proc.returncode}; its log ends:\n{log}")
        return False

    def x(self, *argv: str, check: bool = True, timeout_s: float = 60) -> str | None:
        """Run an X client on this display; its output, or None if it failed (or took
        longer than ``timeout_s``: ``import`` waits for good on a window that closed)
        and not ``check``."""
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, env=self.env, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            if check:
                raise GuiError(f"{' '.join(argv)}: no answer in {timeout_s:.0f} s") from None
            return None
        if done.returncode != 0:
            if check:
                raise GuiError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
            return None
        return done.stdout

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


class Shots:
    """Numbered screenshots of one test: ``test-artifacts/gui/<test>/NN-step.png``."""

    def __init__(self, display: Display, test: str) -> None:
        self.display = display
        self.dir = ARTIFACTS / test
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.n = 0
        print(f"\nGUI screenshots: {self.dir}", file=sys.stderr)

    def take(self, step: str) -> Path:
        self.n += 1
        path = self.dir / f"{self.n:02d}-{step}.png"
        self.display.x("import", "-window", "root", str(path))
        return path


@dataclass(frozen=True)
class Word:
    """A word the screen shows: its text and its box in window pixels."""

    text: str
    left: int
    top: int
    width: int
    height: int
    line: tuple[int, int, int]  # tesseract's block, paragraph, line

    @property
    def center(self) -> tuple[int, int]:
        return self.left + self.width // 2, self.top + self.height // 2


OCR_SCALE = 3  # tesseract reads small UI text far better enlarged
# Grey below this share of white turns black: the muted (grey) explanations stay
# readable, and the page's light background turns white.
OCR_THRESHOLD = "75%"


def ocr_ready(dark: bool = False) -> list[str]:
    """ImageMagick's arguments that make a screenshot plain for tesseract: grey, dark
    text on light (``dark``: a dark theme's light text is negated first), enlarged,
    then black and white."""
    return [
        "-colorspace",
        "Gray",
        *(["-negate"] if dark else []),
        "-resize",
        f"{OCR_SCALE * 100}%",
        "-threshold",
        OCR_THRESHOLD,
    ]


def _plain(text: str) -> str:
    """A word as read, for comparing: lower case, no trailing stop; "|" is an "I"."""
    return text.replace("|", "i").lower().strip(".,:;…")


class App:
    """One ``xln-wallet`` process on the display."""

    def __init__(self, display: Display, data: Path, name: str, *args: str) -> None:
        self.display = display
        self.data = data
        self.name = name
        self.ready_file = data.parent / f"{name}.ready"
        self.ready_file.unlink(missing_ok=True)
        env = {**display.env, "XLN_WALLET_READY_FILE": str(self.ready_file)}
        self.log = data.parent / f"{name}.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(ROOT / ".venv" / "bin" / "xln-wallet"), "--data", str(data), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )

    # windows -------------------------------------------------------------------

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise GuiError(
                f"{self.name} exited with code {self.proc.returncode}; its log ends:\n{tail}"
            )

    def windows(self, title: str) -> list[str]:
        """This process's visible windows whose title is ``title`` exactly."""
        out = self.display.x(
            "xdotool",
            "search",
            "--all",  # both conditions: xdotool's default is either
            "--onlyvisible",
            "--pid",
            str(self.proc.pid),
            "--name",
            f"^{re.escape(title)}$",
            check=False,
        )
        return out.split() if out else []

    def window(self, title: str, timeout_s: float = WAIT_S) -> str:
        """Wait until a window titled ``title`` shows; activate it; its id."""

        def found() -> str | None:
            self._alive()
            ids = self.windows(title)
            return ids[-1] if ids else None

        wid = until(f"{self.name}'s window {title!r}", found, timeout_s)
        self.display.x("xdotool", "windowactivate", "--sync", wid, check=False)

        def focused() -> bool:
            if self.focused() == wid:
                return True
            # Another window took the focus as it appeared (two apps starting at
            # once): a person would click this one again.
            self.display.x("xdotool", "windowactivate", wid, check=False)
            return False

        until(f"{title!r} to have the focus", focused, 20)
        return wid

    def focused(self) -> str:
        return (self.display.x("xdotool", "getactivewindow", check=False) or "").strip()

    def title(self, wid: str) -> str:
        return (self.display.x("xdotool", "getwindowname", wid) or "").strip()

    def gone(self, wid: str, timeout_s: float = WAIT_S) -> None:
        """Wait until the window ``wid`` is closed (or no longer shown)."""

        def closed() -> bool:
            if self.display.x("xdotool", "getwindowname", wid, check=False) is None:
                return True
            shown = self.display.x(
                "xdotool", "search", "--onlyvisible", "--pid", str(self.proc.pid), ".*", check=False
            )
            return wid not in (shown or "").split()

        until(f"window {wid} to close", closed, timeout_s)

    def ready(self, timeout_s: float = WAIT_S) -> str:
        """Wait for the app's own start milestone ``ready`` (the main window is shown)."""

        def line() -> str | None:
            self._alive()
            text = self.ready_file.read_text() if self.ready_file.exists() else ""
            return text if text.startswith("ready") else None

        return until(f"{self.name} to reach its main window", line, timeout_s)

    # a person's hands ------------------------------------------------------------

    def type(self, text: str, delay_ms: int = KEY_DELAY_MS) -> None:
        self.display.x("xdotool", "type", "--delay", str(delay_ms), "--", text)
        pause()

    def key(self, *keys: str) -> None:
        self.display.x("xdotool", "key", "--delay", str(KEY_DELAY_MS), *keys)
        pause()

    def click(self, wid: str, x: int, y: int) -> None:
        self.display.x("xdotool", "mousemove", "--window", wid, str(x), str(y), "click", "1")
        pause()

    def click_text(
        self, wid: str, text: str, timeout_s: float = 20.0, *, leftmost: bool = False
    ) -> Word:
        """Click the middle of the words ``text`` as the window shows them (``leftmost``:
        of the leftmost place that shows them, as a list's left of its details)."""

        def place() -> Word | None:
            found = self.find_all(wid, text)
            if leftmost:
                found.sort(key=lambda w: w.left)
            return found[0] if found else None

        word = until(f"{text!r} on screen", place, timeout_s)
        x, y = word.center
        self.click(wid, x, y)
        return word

    # a person's eyes ---------------------------------------------------------------

    def read(self, wid: str, *, dark: bool = False) -> list[Word]:
        """The words the window shows, with their boxes in window pixels.

        The screenshot is made plain for tesseract first (:func:`ocr_ready`). Text on
        a coloured button (white on blue) does not survive that: buttons are pressed
        from the keyboard (accelerators, Enter), never found by their text."""
        shot = self.data.parent / f"{self.name}-ocr.png"
        # import copies the window's area of the screen: it must be on top.
        self.display.x("xdotool", "windowraise", wid, check=False)
        if self.display.x("import", "-window", wid, str(shot), check=False, timeout_s=10) is None:
            self._alive()
            raise GuiError(f"{self.name}'s window {wid} cannot be read: it is gone")
        big = shot.with_suffix(".big.png")
        self.display.x("convert", str(shot), *ocr_ready(dark), str(big))
        done = subprocess.run(
            ["tesseract", str(big), "stdout", "--psm", "11", "tsv"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise GuiError(f"tesseract: {done.stderr.strip()}")
        words = []
        for row in csv.DictReader(io.StringIO(done.stdout), delimiter="\t", quoting=csv.QUOTE_NONE):
            text = (row.get("text") or "").strip()
            if not text or row["level"] != "5":
                continue
            words.append(
                Word(
                    text,
                    int(row["left"]) // OCR_SCALE,
                    int(row["top"]) // OCR_SCALE,
                    int(row["width"]) // OCR_SCALE,
                    int(row["height"]) // OCR_SCALE,
                    (int(row["block_num"]), int(row["par_num"]), int(row["line_num"])),
                )
            )
        return words

    def find_all(self, wid: str, text: str) -> list[Word]:
        """Where the window shows the words ``text`` (on one line), each as one box.

        Runs of words that are a whole line (a button's or a radio button's label)
        come before the same words inside a sentence."""
        wanted = text.lower().split()
        words = self.read(wid)
        whole: list[Word] = []
        inside: list[Word] = []
        for i in range(len(words) - len(wanted) + 1):
            run = words[i : i + len(wanted)]
            if [_plain(w.text) for w in run] == wanted and len({w.line for w in run}) == 1:
                left = run[0].left
                right = run[-1].left + run[-1].width
                top = min(w.top for w in run)
                bottom = max(w.top + w.height for w in run)
                box = Word(text, left, top, right - left, bottom - top, run[0].line)
                others = [w for w in words if w.line == run[0].line and w not in run]
                # a radio button's dot is no word
                alone = not any(c.isalnum() for w in others for c in w.text)
                (whole if alone else inside).append(box)
        return whole + inside

    def find(self, wid: str, text: str) -> Word | None:
        found = self.find_all(wid, text)
        return found[0] if found else None

    def shows(self, wid: str, text: str) -> bool:
        return self.find(wid, text) is not None

    # the end --------------------------------------------------------------------------

    def wait_exit(self, timeout_s: float = WAIT_S) -> int:
        return until(f"{self.name} to exit", lambda: self.proc.poll(), timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def running(app: App, shots: Shots) -> Iterator[App]:
    """The app, ended (TERM, then KILL) if the test leaves it running; on a failure,
    the screen as it was is kept first."""
    try:
        yield app
    except BaseException:
        with contextlib.suppress(Exception):
            shots.take(f"failed-{app.name}")
        raise
    finally:
        app.kill()
