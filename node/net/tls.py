"""TLS for the node's WebSocket links: the server's context, the client's trust, and
the rule on where an API token may go.

A node serves ``wss://`` when given a certificate and its key
(:func:`server_context`; TLS 1.2 or later). A client (a peer link, an agent,
:class:`~node.net.client.NodeClient`, the wallet) trusts a ``wss://`` server in
one of two ways (:class:`ClientTrust`):

- **a CA**: the certificate chain must verify against the system's CA store or
  a given CA file, and name the host (ordinary HTTPS rules);
- **a pinned fingerprint**: the SHA-256 of the server certificate's DER bytes
  must equal the one given; the CA and the host name are then not checked
  (a self-signed certificate of a private hub). On the command line the pin
  rides on the URL: ``wss://host:port#sha256=<64 hex>`` (colons allowed).

:func:`connect` opens the WebSocket, checks the pin, and only then hands the
connection back, so nothing of the protocol (no HELLO) is sent to a server
whose certificate was refused. A refusal raises :class:`CertificateRefused`
(a ``ConnectionError``) naming what was expected and what was presented;
:class:`UntrustedCertificate`, its case where no CA vouches for the certificate,
carries the presented fingerprint so that a person can be asked to trust it.

API tokens travel only over TLS or loopback (:func:`token_transport_refusal`,
for the client, and :func:`plain_token_refusal`, for the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

FINGERPRINT_PREFIX = "sha256="
FINGERPRINT_BYTES = 32
PROBE_TIMEOUT_S = 10.0


class TlsConfigError(ValueError):
    """A TLS option cannot be used (a missing file, a bad fingerprint, a bad key)."""


class CertificateRefused(ConnectionError):
    """The server's certificate is not the one this client trusts; nothing was sent."""

    def __init__(self, url: str, message: str, presented: str | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.presented = presented  # the certificate's SHA-256 fingerprint, hex, if read


class UntrustedCertificate(CertificateRefused):
    """No CA this client trusts vouches for the server's certificate (self-signed,
    another CA, or another host name); ``presented`` is its fingerprint."""

    def __init__(self, url: str, presented: str, reason: str) -> None:
        super().__init__(
            url,
            f"the certificate of {url} is not trusted ({reason}); its SHA-256 fingerprint "
            f"is {pretty(presented)}. Pin it if you know it is the node's "
            f"(#{FINGERPRINT_PREFIX}{presented} on the URL), or give the CA file that signed it",
            presented,
        )
        self.reason = reason


# Fingerprints ------------------------------------------------------------------------


def fingerprint(der: bytes) -> str:
    """A certificate's SHA-256 fingerprint: 64 lowercase hex digits of its DER bytes."""
    return hashlib.sha256(der).hexdigest()


def parse_fingerprint(text: str) -> str:
    """``text`` as 64 lowercase hex digits; accepts upper case, colons and a
    ``sha256=`` prefix (as ``openssl x509 -fingerprint -sha256`` prints it, after
    the ``=``)."""
    value = text.strip()
    if value.lower().startswith(FINGERPRINT_PREFIX):
        value = value[len(FINGERPRINT_PREFIX) :]
    value = value.replace(":", "").lower()
    if len(value) != 2 * FINGERPRINT_BYTES or any(c not in "0123456789abcdef" for c in value):
        raise TlsConfigError(
            f"{text!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
        )
    return value


def pretty(hex_fingerprint: str) -> str:
    """The fingerprint as people compare it: upper-case pairs joined by colons."""
    h = hex_fingerprint.upper()
    return ":".join(h[i : i + 2] for i in range(0, len(h), 2))


def split_pin(url: str) -> tuple[str, str | None]:
    """``wss://host:port/path#sha256=HEX`` -> (the URL without it, the fingerprint)."""
    parts = urlsplit(url)
    if not parts.fragment:
        return url, None
    if not parts.fragment.lower().startswith(FINGERPRINT_PREFIX):
        raise TlsConfigError(
            f"{url}: the only thing a node URL may carry after '#' is "
            f"{FINGERPRINT_PREFIX}<certificate fingerprint>"
        )
    if parts.scheme != "wss":
        raise TlsConfigError(f"{url}: a certificate fingerprint needs a wss:// URL")
    bare = urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
    return bare, parse_fingerprint(parts.fragment)


# Loopback and the token rule -----------------------------------------------------------


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if not host:
        return False
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def token_transport_refusal(url: str) -> str | None:
    """Why a client must not send an API token to ``url``, or None: a token goes only
    over ``wss://``, or over ``ws://`` to a loopback host."""
    parts = urlsplit(url)
    if parts.scheme == "wss" or (parts.scheme == "ws" and is_loopback(parts.hostname)):
        return None
    return (
        f"refusing to send an API token to {url} over plain ws://: tokens travel only over "
        "wss:// (TLS) or to a loopback host; serve the node with --tls-cert and --tls-key"
    )


def plain_token_refusal(tls: bool, remote_host: str | None) -> str | None:
    """Why a node refuses a token HELLO that came on a connection, or None: a plain
    (not TLS) connection from another machine cannot carry a token."""
    if tls or is_loopback(remote_host):
        return None
    return (
        "API tokens are accepted only over TLS (wss://) or from loopback; "
        "this connection is plain ws://"
    )


# Contexts ------------------------------------------------------------------------------


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context serving ``cert_file`` (PEM, the chain after the
    certificate) with ``key_file`` (PEM, unencrypted)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for path, what in ((cert_file, "certificate"), (key_file, "key")):
        if not path.is_file():
            raise TlsConfigError(f"the TLS {what} file {path} does not exist")
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise TlsConfigError(
            f"cannot use {cert_file} with {key_file} ({exc.reason or exc}): both must be PEM, "
            "the key unencrypted and matching the certificate"
        ) from None
    return context


@dataclass(frozen=True, slots=True)
class ClientTrust:
    """What a client trusts a ``wss://`` server's certificate by: a pinned SHA-256
    fingerprint (then nothing else is checked), else a CA file, else the system's CAs."""

    ca_file: Path | None = None
    fingerprint: str | None = None  # 64 lowercase hex digits

    def with_pin(self, pin: str | None) -> ClientTrust:
        return self if pin is None else ClientTrust(self.ca_file, pin)

    def context(self) -> ssl.SSLContext:
        if self.fingerprint is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the pin is checked once connected
        else:
            if self.ca_file is not None and not self.ca_file.is_file():
                raise TlsConfigError(f"the CA file {self.ca_file} does not exist")
            try:
                context = ssl.create_default_context(
                    cafile=str(self.ca_file) if self.ca_file is not None else None
                )
            except ssl.SSLError as exc:
                raise TlsConfigError(f"cannot read the CA file {self.ca_file}: {exc}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


def peer_fingerprint(ws: ClientConnection) -> str | None:
    """The fingerprint of the certificate the server presented on ``ws`` (None on ws://)."""
    ssl_object = ws.transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return None if der is None else fingerprint(der)


async def connect(url: str, trust: ClientTrust | None = None, **options: Any) -> ClientConnection:
    """Open a WebSocket to ``url`` (``ws://`` or ``wss://``, a pin allowed after ``#``),
    trusting a ``wss://`` server as ``trust`` says; ``options`` go to websockets.

    Raises CertificateRefused (UntrustedCertificate when no CA vouches for it)
    before anything of the protocol is sent, TlsConfigError for bad options, and
    what websockets raises otherwise.
    """
    bare, pin = split_pin(url)
    trust = (trust or ClientTrust()).with_pin(pin)
    if urlsplit(bare).scheme != "wss":
        return await ws_connect(bare, **options)
    try:
        ws = await ws_connect(bare, ssl=trust.context(), **options)
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or str(exc)
        presented = await _probe(bare)
        if presented is None:
            raise CertificateRefused(
                bare, f"the certificate of {bare} is not trusted ({reason})"
            ) from None
        raise UntrustedCertificate(bare, presented, reason) from None
    if trust.fingerprint is not None:
        presented = peer_fingerprint(ws)
        if presented is None or not hmac.compare_digest(presented, trust.fingerprint):
            await ws.close(1008, "certificate fingerprint mismatch")
            raise CertificateRefused(
                bare,
                f"the certificate of {bare} has SHA-256 fingerprint "
                f"{pretty(presented or '')}, not the pinned {pretty(trust.fingerprint)}; "
                "refusing to talk to it",
                presented,
            )
    return ws


async def _probe(url: str) -> str | None:
    """The fingerprint of the certificate ``url``'s server presents, read by a bare TLS
    handshake that checks nothing and sends nothing; None if it cannot be read."""
    parts = urlsplit(url)
    if parts.hostname is None:
        return None
    context = ClientTrust(fingerprint="0" * 64).context()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            _, writer = await asyncio.open_connection(
                parts.hostname, parts.port or 443, ssl=context
            )
    except (OSError, TimeoutError):
        return None
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        return None if der is None else fingerprint(der)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
