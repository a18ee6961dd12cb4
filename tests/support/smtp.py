"""A real SMTP server on loopback (aiosmtpd, in a thread of its own) that keeps what it
receives, for the tests of mail: STARTTLS or implicit TLS with a certificate of a test CA made
here, AUTH with a user and password, and refusals on demand.

The worker under test speaks real SMTP to it (server/mail.py's ``smtp_send``); nothing is
mocked. ``received`` holds each message as the server got it, parsed.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import re
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server.config import Settings
from tests.support.servers import free_port

USER = "interocc-mailer"
PASSWORD = "smtp password: with spaces & symbols/%"
LINK_RE = re.compile(r"https?://\S+")
FROM = "InterOcc <noreply@interocc.test>"


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage
    authenticated_as: str | None
    secure: bool  # the message came over TLS

    @property
    def to(self) -> str:
        return str(self.message["To"])

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        body = self.message.get_body(("plain",))
        assert body is not None
        return str(body.get_content())

    def link(self, path: str) -> str:
        """The first link in the text whose path starts with ``path``."""
        for url in LINK_RE.findall(self.text):
            if re.match(r"https?://[^/]+" + re.escape(path), url):
                return url
        raise AssertionError(f"no link to {path} in:\n{self.text}")


@dataclass
class Handler:
    received: list[Received] = field(default_factory=list)
    # address → SMTP answer to RCPT TO (say "550 5.1.1 no such mailbox").
    refuse: dict[str, str] = field(default_factory=dict)
    # An answer to every DATA instead of 250 (say "451 4.3.0 try again later").
    data_answer: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_answer:
            return self.data_answer
        parsed = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        auth = session.auth_data
        with self.lock:
            self.received.append(
                Received(
                    sender=envelope.mail_from,
                    recipients=list(envelope.rcpt_tos),
                    message=parsed,
                    authenticated_as=(
                        auth.login.decode() if isinstance(auth, LoginPassword) else None
                    ),
                    secure=session.ssl is not None
                    or server.transport.get_extra_info("ssl_object") is not None,
                )
            )
        return "250 Message accepted"


@dataclass(frozen=True)
class Certificates:
    ca_file: Path  # what the client trusts (INTEROCC_SMTP_CA_FILE)
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificates(folder: Path) -> Certificates:
    """A test CA, and a certificate it signs for localhost and 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "InterOcc test mail CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificates(ca_file, cert_file, key_file)


def _authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class MailServer:
    """``tls``: "starttls" (required before AUTH and MAIL), "implicit" or "none"."""

    def __init__(self, certificates: Certificates, *, tls: str = "starttls") -> None:
        self.tls = tls
        self.stopped = False
        self.handler = Handler()
        self.port = free_port()
        self.certificates = certificates
        kwargs: dict[str, Any] = {
            "authenticator": _authenticator,
            "auth_required": tls != "none",
        }
        if tls == "starttls":
            kwargs["tls_context"] = certificates.server_context()
            kwargs["require_starttls"] = True
        elif tls == "implicit":
            kwargs["ssl_context"] = certificates.server_context()
            # aiosmtpd does not count a connection that began with TLS as secure enough for
            # AUTH (only one upgraded by STARTTLS); it is, and ``secure`` checks it was. (It
            # then warns against requiring AUTH: tests check ``authenticated_as`` instead.)
            kwargs["auth_require_tls"] = False
            kwargs["auth_required"] = False
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=10, **kwargs
        )

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def url(self, *, user: str = USER, password: str = PASSWORD) -> str:
        from urllib.parse import quote

        scheme = {"starttls": "smtp", "implicit": "smtps", "none": "smtp+plain"}[self.tls]
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if self.tls != "none" else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}"

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.recipients]

    def start(self) -> MailServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        if not self.stopped:  # a test may have stopped it already
            self.stopped = True
            self.controller.stop()


def mail_server(folder: Path, *, tls: str = "starttls") -> Iterator[MailServer]:
    server = MailServer(make_certificates(folder), tls=tls).start()
    try:
        yield server
    finally:
        server.stop()


def with_mail(settings: Settings, smtp: MailServer, **kw: Any) -> Settings:
    """``settings`` sending mail through ``smtp`` (trusting its test CA)."""
    return dataclasses.replace(
        settings,
        smtp_url=smtp.url(),
        mail_from=FROM,
        smtp_ca_file=smtp.certificates.ca_file,
        smtp_timeout=5.0,
        **kw,
    )
