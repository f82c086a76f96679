"""ingest.mail.smtp.deliver against a local aiosmtpd sink: success and error classification."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from devtools.smtp_sink import SmtpSink
from ingest.mail.smtp import SmtpPermanent, SmtpTransient, deliver, recipients_of
from ingest.settings import Settings

SENDER = "noreply@kb-ingest.test"
PASSWORD = "s3cret-Pa55word"


def settings_for(port: int, **overrides: object) -> Settings:
    return Settings(smtp_server="127.0.0.1", smtp_port=port, from_email=SENDER,
                    **overrides)  # type: ignore[arg-type]


def make_message(to: str = "Alice <alice@example.com>", body: str = "hello\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Knowledge Bot <{SENDER}>"
    msg["To"] = to
    msg["Subject"] = "File Processing Complete - 1 Success, 0 Failed"
    msg["Message-ID"] = "<batch-1@kb-ingest.test>"
    msg.set_content(body)
    return msg


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_delivers_one_message_with_the_right_envelope(sink: SmtpSink) -> None:
    body = "line one\n.leading dot survives\nÄrger ü\n"
    response = deliver(make_message(body=body), settings_for(sink.port), timeout=5)

    assert response.startswith("250 ") and "queued as M1" in response
    assert len(sink.wait_for(1)) == 1
    env = sink.received[0]
    assert env.mail_from == SENDER
    assert env.recipients == ("alice@example.com",)
    got = sink.messages[0]
    assert got["Message-ID"] == "<batch-1@kb-ingest.test>"
    assert got.get_content().replace("\r\n", "\n") == body  # CRLF on the wire
    assert b"\r\n.leading dot survives" in env.raw  # dot-stuffed, then unstuffed by the server
    assert sink.connections == 1


def test_multiple_to_addresses_and_bcc_is_not_leaked(sink: SmtpSink) -> None:
    msg = make_message(to="a@example.com, B <b@example.com>")
    msg["Bcc"] = "secret@example.com"
    deliver(msg, settings_for(sink.port), timeout=5)
    sink.wait_for(1)
    assert sink.received[0].recipients == ("a@example.com", "b@example.com")
    assert b"secret@example.com" not in sink.received[0].raw
    assert msg["Bcc"] == "secret@example.com"  # the caller's message is untouched


def test_no_to_address_is_permanent(sink: SmtpSink) -> None:
    msg = make_message()
    del msg["To"]
    assert recipients_of(msg) == []
    with pytest.raises(SmtpPermanent):
        deliver(msg, settings_for(sink.port), timeout=5)
    assert sink.connections == 0


def test_connection_dropped_before_greeting_is_transient(sink: SmtpSink) -> None:
    sink.refuse_connections(1)
    with pytest.raises(SmtpTransient) as info:
        deliver(make_message(), settings_for(sink.port), timeout=5)
    assert info.value.code is None
    assert sink.connections == 1 and sink.messages == []


def test_refuse_for_every_other_session_then_wears_off(sink: SmtpSink) -> None:
    sink.refuse_for(30, every=2)
    outcomes = []
    for _ in range(4):
        try:
            deliver(make_message(), settings_for(sink.port), timeout=5)
            outcomes.append("sent")
        except SmtpTransient:
            outcomes.append("refused")
    assert outcomes == ["sent", "refused", "sent", "refused"]
    sink.refuse_for(0)
    deliver(make_message(), settings_for(sink.port), timeout=5)
    assert len(sink.wait_for(3)) == 3


def test_421_greeting_is_transient(sink: SmtpSink) -> None:
    sink.refuse_connections(1, reply="421 4.3.2 try later")
    with pytest.raises(SmtpTransient) as info:
        deliver(make_message(), settings_for(sink.port), timeout=5)
    assert info.value.code == 421
    assert info.value.response == "421 4.3.2 try later"
    assert sink.messages == []


def test_451_on_rcpt_is_transient(sink: SmtpSink) -> None:
    sink.reject_rcpt(451)
    with pytest.raises(SmtpTransient) as info:
        deliver(make_message(), settings_for(sink.port), timeout=5)
    assert info.value.code == 451
    assert "RCPT TO" in str(info.value)
    assert sink.messages == []


def test_550_on_rcpt_is_permanent(sink: SmtpSink) -> None:
    sink.reject_rcpt(550)
    with pytest.raises(SmtpPermanent) as info:
        deliver(make_message(), settings_for(sink.port), timeout=5)
    assert info.value.code == 550
    assert info.value.response == "550 5.1.1 no such user"
    assert sink.messages == []


def test_one_refused_recipient_of_two_sends_nothing(sink: SmtpSink) -> None:
    sink.reject_rcpt(550, times=1)
    with pytest.raises(SmtpPermanent):
        deliver(make_message(to="a@example.com, b@example.com"), settings_for(sink.port),
                timeout=5)
    assert sink.messages == []


def test_nothing_listening_is_transient() -> None:
    with pytest.raises(SmtpTransient) as info:
        deliver(make_message(), settings_for(free_port()), timeout=5)
    assert info.value.code is None and info.value.response == ""
    assert "ConnectionRefusedError" in str(info.value)


def test_timeout_waiting_for_greeting_is_transient() -> None:
    with socket.socket() as listener:  # accepts (backlog) but never speaks
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with pytest.raises(SmtpTransient) as info:
            deliver(make_message(), settings_for(port), timeout=0.5)
    assert "timed out" in str(info.value)


def test_retries_after_refused_connections_deliver_exactly_once(sink: SmtpSink) -> None:
    sink.refuse_connections(3)
    settings = settings_for(sink.port)
    for _ in range(3):
        with pytest.raises(SmtpTransient):
            deliver(make_message(), settings, timeout=5)
    assert sink.messages == []
    assert deliver(make_message(), settings, timeout=5).startswith("250")
    assert len(sink.wait_for(1)) == 1
    assert sink.connections == 4


def test_disconnect_after_body_is_permanent_outcome_unknown(sink: SmtpSink) -> None:
    sink.drop_after_data()
    with pytest.raises(SmtpPermanent) as info:
        deliver(make_message(), settings_for(sink.port), timeout=5)
    assert "outcome unknown" in str(info.value)
    assert len(sink.messages) == 1  # the server did take it: a retry would duplicate


def test_timeout_after_body_is_permanent_outcome_unknown(sink: SmtpSink) -> None:
    sink.delay_data_reply(2.0)
    with pytest.raises(SmtpPermanent) as info:
        deliver(make_message(), settings_for(sink.port), timeout=0.5)
    assert "outcome unknown" in str(info.value)
    assert info.value.code is None


def test_sink_reset_clears_messages_and_faults(sink: SmtpSink) -> None:
    deliver(make_message(), settings_for(sink.port), timeout=5)
    sink.wait_for(1)
    sink.reject_rcpt(550)
    sink.reset()
    assert sink.messages == [] and sink.received == [] and sink.connections == 0
    deliver(make_message(), settings_for(sink.port), timeout=5)  # fault is gone
    assert len(sink.wait_for(1)) == 1


def test_starttls_not_offered_is_permanent(sink: SmtpSink) -> None:
    with pytest.raises(SmtpPermanent) as info:
        deliver(make_message(), settings_for(sink.port, smtp_use_tls=True), timeout=5)
    assert "STARTTLS" in str(info.value)
    assert sink.messages == []


def test_implicit_tls_against_plain_server_is_transient(sink: SmtpSink) -> None:
    with pytest.raises(SmtpTransient) as info:  # an SSLError is an OSError: not a 5xx
        deliver(make_message(), settings_for(sink.port, smtp_use_ssl=True), timeout=5)
    assert "SSL" in str(info.value)
    assert sink.messages == []


# -- TLS (a self-signed certificate for 127.0.0.1; trusted via SSL_CERT_FILE) ---------------


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )
    return cert, key


def server_context(cert_files: tuple[str, str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert_files)
    return ctx


def test_starttls_with_auth_delivers(cert_files: tuple[str, str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", cert_files[0])  # read by create_default_context()
    logins: list[bytes] = []

    def check(mechanism: str, login: bytes, password: bytes) -> bool:
        logins.append(login)
        return password == PASSWORD.encode()

    with SmtpSink(tls_context=server_context(cert_files), require_starttls=True,
                  auth_required=True, auth_callback=check) as s:
        settings = settings_for(s.port, smtp_use_tls=True, smtp_user="bot",
                                smtp_password=PASSWORD)
        assert deliver(make_message(), settings, timeout=5).startswith("250")
        assert len(s.wait_for(1)) == 1
    assert logins == [b"bot"]  # AUTH happened, and over TLS (aiosmtpd's default demands it)


def test_starttls_with_untrusted_certificate_is_permanent(cert_files: tuple[str, str]) -> None:
    with SmtpSink(tls_context=server_context(cert_files), require_starttls=True) as s:
        with pytest.raises(SmtpPermanent) as info:
            deliver(make_message(), settings_for(s.port, smtp_use_tls=True), timeout=5)
        assert "certificate" in str(info.value)
        assert s.messages == []


def test_implicit_tls_delivers(cert_files: tuple[str, str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", cert_files[0])
    with SmtpSink(ssl_context=server_context(cert_files)) as s:
        settings = settings_for(s.port, smtp_use_ssl=True)
        assert deliver(make_message(), settings, timeout=5).startswith("250")
        assert len(s.wait_for(1)) == 1
        assert s.received[0].recipients == ("alice@example.com",)


# -- AUTH over plain text (aiosmtpd needs auth_require_tls=False for that) -----------------


@pytest.fixture
def auth_sink() -> Iterator[SmtpSink]:
    def check(mechanism: str, login: bytes, password: bytes) -> bool:
        return login == b"bot" and password == PASSWORD.encode()

    with SmtpSink(auth_require_tls=False, auth_required=True, auth_callback=check) as s:
        yield s


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_auth_success_delivers(auth_sink: SmtpSink) -> None:
    settings = settings_for(auth_sink.port, smtp_user="bot", smtp_password=PASSWORD)
    assert deliver(make_message(), settings, timeout=5).startswith("250")
    assert len(auth_sink.wait_for(1)) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_auth_failure_is_permanent_and_never_shows_the_password(auth_sink: SmtpSink) -> None:
    wrong = "wrong-" + PASSWORD
    settings = settings_for(auth_sink.port, smtp_user="bot", smtp_password=wrong)
    with pytest.raises(SmtpPermanent) as info:
        deliver(make_message(), settings, timeout=5)
    assert info.value.code == 535
    exc: BaseException | None = info.value
    while exc is not None:  # nothing in the chain may carry the password
        assert wrong not in str(exc) and wrong not in repr(exc.args)
        exc = exc.__cause__ or exc.__context__
    assert auth_sink.messages == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_auth_required_but_no_user_is_permanent(auth_sink: SmtpSink) -> None:
    with pytest.raises(SmtpPermanent) as info:
        deliver(make_message(), settings_for(auth_sink.port), timeout=5)
    assert info.value.code == 530
    assert auth_sink.messages == []
