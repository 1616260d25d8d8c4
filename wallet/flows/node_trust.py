"""Trusting a remote node's TLS certificate: a CA, or trust on first use.

A remote node at a ``wss://`` URL is trusted as the wallet's settings say
(:func:`trust_of`): the certificate fingerprint the person accepted before
(``node_cert_sha256``: then only that certificate is trusted), else a CA file
(``node_ca_file``), else the system's CAs.

When no CA vouches for the certificate (a private hub's self-signed one) and
none was accepted yet, :func:`connect_trusting` shows the person the
certificate's SHA-256 fingerprint (:class:`CertificateQuestion`, through the
``ask`` callback the GUI gives; headless, there is none and the connection is
refused) and, if they accept it, keeps it in the settings and connects pinned
to it. A certificate that differs from the accepted one later is refused
(:class:`CertificateChanged`, naming both fingerprints); nothing is sent to
such a node, the token least of all.

Plain Python, no Qt: the GUI's dialog is ``wallet/views/certificate.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from node.net.tls import CertificateRefused, ClientTrust, UntrustedCertificate, pretty
from wallet.settings import Settings

type Ask = Callable[[CertificateQuestion], Awaitable[bool]]
type Open = Callable[[ClientTrust], Awaitable[None]]


class CertificateNotTrusted(ConnectionError):
    """The person did not accept the node's certificate (or could not be asked)."""


class CertificateChanged(ConnectionError):
    """The node presents another certificate than the one accepted before."""


@dataclass(frozen=True, slots=True)
class CertificateQuestion:
    """What the person is asked: whether this certificate is their node's."""

    url: str
    fingerprint: str  # 64 lowercase hex digits
    reason: str  # why no CA vouches for it

    @property
    def pretty(self) -> str:
        """The fingerprint as people compare it (``AB:CD:…``)."""
        return pretty(self.fingerprint)

    @property
    def title(self) -> str:
        return "Trust this node's certificate?"

    @property
    def text(self) -> str:
        return (
            f"The node at {self.url} presented a certificate that no certificate authority "
            f"this wallet trusts vouches for ({self.reason}).\n\n"
            f"Its SHA-256 fingerprint is:\n{self.pretty}\n\n"
            "Compare it with the one the node's operator gives you (openssl x509 "
            "-fingerprint -sha256 on the node's certificate). If they match, accept it: "
            "the wallet will trust this certificate, and only this one, for this node "
            "from now on. If they differ, someone may be between you and the node: "
            "do not accept."
        )


def trust_of(settings: Settings) -> ClientTrust:
    """How the settings trust a remote ``wss://`` node's certificate."""
    return ClientTrust(
        ca_file=Path(settings.node_ca_file).expanduser() if settings.node_ca_file else None,
        fingerprint=settings.node_cert_sha256 or None,
    )


def accept(settings: Settings, question: CertificateQuestion) -> Settings:
    """The settings with the question's certificate accepted for the node."""
    return dataclasses.replace(settings, node_cert_sha256=question.fingerprint)


def forget(settings: Settings) -> Settings:
    """The settings with no accepted certificate (the node's was replaced on purpose)."""
    return dataclasses.replace(settings, node_cert_sha256="")


async def connect_trusting(
    open_: Open,
    url: str,
    settings: Settings,
    ask: Ask | None,
    save: Callable[[Settings], None],
) -> Settings:
    """Connect with ``open_(trust)`` as the settings trust the node; on a certificate no
    CA vouches for, ask the person (``ask``), and if they accept, ``save`` the
    settings holding its fingerprint and connect pinned to it. Returns the settings
    in force.

    Raises CertificateNotTrusted (not accepted, or no one to ask),
    CertificateChanged (another certificate than the accepted one), and what
    ``open_`` raises otherwise.
    """
    try:
        await open_(trust_of(settings))
        return settings
    except UntrustedCertificate as exc:
        if settings.node_cert_sha256:  # cannot happen with a pin: pins skip the CA check
            raise
        question = CertificateQuestion(url, exc.presented or "", exc.reason)
    except CertificateRefused as exc:
        if settings.node_cert_sha256 and exc.presented is not None:
            raise CertificateChanged(
                f"the node at {url} now presents a certificate with SHA-256 fingerprint "
                f"{pretty(exc.presented)}, but this wallet accepted "
                f"{pretty(settings.node_cert_sha256)}. Not connected. If the node's operator "
                "replaced its certificate, forget the accepted one in Settings and connect "
                "again; otherwise someone may be between you and the node"
            ) from None
        raise
    if ask is None:
        raise CertificateNotTrusted(
            f"the certificate of {url} is not trusted by any CA ({question.reason}); its "
            f"SHA-256 fingerprint is {question.pretty}. Accept it in the wallet's window, "
            "or give the CA file that signed it (Settings)"
        )
    if not await ask(question):
        raise CertificateNotTrusted(
            f"not connected to {url}: its certificate ({question.pretty}) was not accepted"
        )
    settings = accept(settings, question)
    save(settings)
    await open_(trust_of(settings))
    return settings
