"""The light and dark themes: the style sheets in ``resources/*.qss``, the matching
``QPalette`` (Fusion style), the colours of painted widgets, and themed SVG icons.

Resources are found next to the source tree, or inside a PyInstaller bundle
(``sys._MEIPASS/resources``) when frozen.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from wallet.qt import (
    QApplication,
    QByteArray,
    QColor,
    QGuiApplication,
    QIcon,
    QPainter,
    QPalette,
    QPixmap,
    QStyleFactory,
    QSvgRenderer,
    Qt,
    QWidget,
)

THEMES = ("light", "dark", "system")


@dataclass(frozen=True, slots=True)
class Colors:
    """The theme's colours for what is painted by hand (chart, dots, bars);
    the same values as in the theme's .qss."""

    name: str
    window: str
    base: str
    alt: str
    text: str
    muted: str
    border: str
    accent: str
    ok: str
    warn: str
    err: str
    series1: str  # chart: tick lateness
    series2: str  # chart: finality
    tag_bg: str  # a governance or channel action's tag
    tag_fg: str


LIGHT = Colors(
    "light", "#f5f6f8", "#ffffff", "#f3f4f7", "#1d2330", "#6b7280", "#dde1e7",
    "#2f6fde", "#2e9d5b", "#c98a1c", "#c9413a", "#2f6fde", "#c98a1c", "#f6e7c1", "#6b4e00",
)  # fmt: skip
DARK = Colors(
    "dark", "#1b1e23", "#22262d", "#272c34", "#e3e6eb", "#959eab", "#353b45",
    "#4f86ee", "#4cc07a", "#e0a53a", "#e5645b", "#6d9cf2", "#e0a53a", "#4a3b12", "#f3d48a",
)  # fmt: skip

# Called after each apply(): widgets that draw theme icons or colours by hand redraw.
changed: list[Callable[[], None]] = []

_current: Colors = LIGHT


def resource_dir() -> Path:
    """``resources/``: in the PyInstaller bundle when frozen, else beside ``wallet/``."""
    bundle = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parents[2] / "resources"


def resolve(name: str) -> str:
    """``light`` or ``dark``; ``system`` follows the desktop's colour scheme."""
    if name not in THEMES:
        raise ValueError(f"theme must be one of {', '.join(THEMES)}, not {name!r}")
    if name != "system":
        return name
    hints = QGuiApplication.styleHints()
    return "dark" if hints.colorScheme() == Qt.ColorScheme.Dark else "light"


def colors() -> Colors:
    """The colours of the theme in use."""
    return _current


def style_sheet(name: str) -> str:
    """The theme's style sheet; ``@RESOURCES@`` in it becomes the resources folder
    (its images, wherever the app or the bundle lives)."""
    folder = resource_dir()
    path = folder / f"{name}.qss"
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise FileNotFoundError(f"theme style sheet missing: {path}") from exc
    return text.replace("@RESOURCES@", folder.as_posix())


def palette(c: Colors) -> QPalette:
    pal = QPalette()
    role = QPalette.ColorRole
    for r, value in (
        (role.Window, c.window),
        (role.WindowText, c.text),
        (role.Base, c.base),
        (role.AlternateBase, c.alt),
        (role.Text, c.text),
        (role.Button, c.base),
        (role.ButtonText, c.text),
        (role.ToolTipBase, c.base),
        (role.ToolTipText, c.text),
        (role.PlaceholderText, c.muted),
        (role.Highlight, c.accent),
        (role.HighlightedText, "#ffffff"),
        (role.Link, c.accent),
        (role.Mid, c.border),
        (role.Midlight, c.alt),
    ):
        pal.setColor(r, QColor(value))
    disabled = QPalette.ColorGroup.Disabled
    for r in (role.Text, role.ButtonText, role.WindowText):
        pal.setColor(disabled, r, QColor(c.muted))
    return pal


def apply(app: QApplication, name: str) -> Colors:
    """Style the whole application with a theme (``light``, ``dark`` or ``system``)."""
    global _current
    resolved = resolve(name)
    _current = DARK if resolved == "dark" else LIGHT
    fusion = QStyleFactory.create("Fusion")
    if fusion is not None:
        app.setStyle(fusion)
    app.setPalette(palette(_current))
    app.setStyleSheet(style_sheet(resolved))
    icon.cache_clear()
    for redraw in list(changed):
        redraw()
    return _current


@cache
def _svg(name: str) -> str:
    return (resource_dir() / "icons" / f"{name}.svg").read_text("utf-8")


@cache
def icon(name: str, color: str | None = None, size: int = 20) -> QIcon:
    """A resource icon drawn in the theme's text colour (or ``color``)."""
    svg = _svg(name).replace("currentColor", color or _current.text)
    renderer = QSvgRenderer(QByteArray(svg.encode()))
    result = QIcon()
    for scale in (1, 2):
        pixmap = QPixmap(size * scale, size * scale)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        renderer.render(painter)
        painter.end()
        pixmap.setDevicePixelRatio(scale)
        result.addPixmap(pixmap)
    return result


def follow_theme(widget: QWidget, redraw: Callable[[], None]) -> None:
    """Call ``redraw`` after each theme change (icons drawn in the old theme's colour
    would stay: dark icons on the dark sidebar), until ``widget`` is destroyed."""
    changed.append(redraw)

    def detach() -> None:
        if redraw in changed:
            changed.remove(redraw)

    widget.destroyed.connect(detach)


def app_icon() -> QIcon:
    return QIcon(str(resource_dir() / "icons" / "app.svg"))
