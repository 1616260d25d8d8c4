"""The question of trust on first use: a remote node's certificate that no CA vouches
for, its SHA-256 fingerprint shown to the person, who accepts or refuses it.

Thin: the question, its text and what accepting does are in
``wallet/flows/node_trust.py``; this only shows it and says which button was
pressed. The dialog is window-modal and opened without a nested event loop.
"""

from __future__ import annotations

import asyncio

from wallet.flows.node_trust import CertificateQuestion
from wallet.qt import QMessageBox, Qt, QWidget


class CertificateDialog(QMessageBox):
    def __init__(self, question: CertificateQuestion, parent: QWidget | None = None) -> None:
        super().__init__(QMessageBox.Icon.Warning, f"XLN Signer · {question.title}", question.text)
        if parent is not None:
            self.setParent(parent, Qt.WindowType.Dialog)
        self.setObjectName("certificateDialog")
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.trust_button = self.addButton(
            "Trust this certificate", QMessageBox.ButtonRole.AcceptRole
        )
        self.refuse_button = self.addButton("Do not connect", QMessageBox.ButtonRole.RejectRole)
        self.setDefaultButton(self.refuse_button)
        self.setEscapeButton(self.refuse_button)

    def trusted(self) -> bool:
        return self.clickedButton() is self.trust_button


async def ask_certificate(question: CertificateQuestion, parent: QWidget | None = None) -> bool:
    """Show the question; True once the person trusts the certificate, False otherwise."""
    dialog = CertificateDialog(question, parent)
    answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def finished(_: int) -> None:
        if not answer.done():
            answer.set_result(dialog.trusted())

    dialog.finished.connect(finished)
    dialog.open()
    try:
        return await answer
    finally:
        dialog.deleteLater()
