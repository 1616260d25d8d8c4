"""The themes' style sheets: every image they name exists, and a combo box shows its
arrow in both (the style sheet's borderless drop-down had hidden Qt's own)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from wallet.qt import QApplication, QComboBox, QImage
from wallet.views import theme


@pytest.mark.parametrize("name", ["light", "dark"])
def test_images_named_by_the_style_sheet_exist(name: str) -> None:
    sheet = theme.style_sheet(name)
    images = re.findall(r"url\(([^)]+)\)", sheet)
    assert any("chevron-down" in i for i in images)
    for image in images:
        assert Path(image).is_file(), image


def test_a_combo_box_shows_its_arrow_in_both_themes(qtbot: QtBot) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    for name in ("light", "dark"):
        theme.apply(app, name)
        combo = QComboBox()
        qtbot.addWidget(combo)
        combo.addItems(["you"])
        combo.resize(200, 30)
        combo.show()
        image = combo.grab().toImage().convertToFormat(QImage.Format.Format_ARGB32)
        background = image.pixel(image.width() - 30, image.height() // 2)
        arrow_area = {
            image.pixel(x, y)
            for x in range(image.width() - 20, image.width() - 4)
            for y in range(8, image.height() - 8)
        }
        assert arrow_area - {background}, f"{name}: something is drawn where the arrow goes"
    theme.apply(app, "light")
