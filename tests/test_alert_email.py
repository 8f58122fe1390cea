"""Alert e-mails through a real SMTP server (aiosmtpd, started by the test): STARTTLS with a certificate of
a test CA and AUTH, implicit TLS, a refused password retried and logged without the password, and the
recipients checked as project data (bounded, one plain address each)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pytest

from alert_support import LOOPBACK, mail_server, quiet_server, send_day
from conftest import make_project, separate_database
from convolens.config import SmtpSettings
from convolens.store import alerts
from convolens.timeutil import utcnow
from convolens.worker.alerting import deliver_due, evaluate_due

TODAY = datetime.combine(utcnow().date(), datetime.min.time())
DAY = TODAY - timedelta(days=3)
PASSWORD = "s3cret-smtp-pass"


def mail_rule(to: list[str]) -> dict:
    return {
        "name": "Busy <day> & night",  # escaped in the HTML part
        "metric": "messages",
        "condition": {"kind": "threshold", "op": "above", "threshold": 1},
        "email": {"to": to},
    }


def fired_mail_rule(db, server, to: list[str], texts: list[str]):  # type: ignore[no-untyped-def]
    """A project with ``texts`` on DAY and an e-mail rule that fires on them, its window decided; the
    project and the rule's id."""
    project = make_project(db)
    with server.client(project.token) as client:
        send_day(client, DAY, texts, "m")
    with server.client(project.admin_token) as admin:
        created = admin.post("/api/v1/alerts", json=mail_rule(to))
        assert created.status_code == 201, created.text
    assert evaluate_due(db, DAY + timedelta(days=1, minutes=10)) == 1
    return project, created.json()


def test_an_alert_e_mail_over_starttls_with_auth(database_url, tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with (
        separate_database(database_url, tmp_path, "alert_mail") as db,
        quiet_server(db, tmp_path) as server,
        mail_server("starttls", "convolens", PASSWORD, tmp_path) as box,
    ):
        project, created = fired_mail_rule(db, server, ["Team@Example.com", "oncall@example.org"], ["a", "b", "c"])
        assert created["email"] == {"to": ["team@example.com", "oncall@example.org"]}
        rule_pk = int(created["id"])
        now = DAY + timedelta(days=1, minutes=10)
        assert deliver_due(db, "w", now, LOOPBACK, smtp=box.smtp, public_url="https://cl.example") == 1
        (mail,) = box.messages
        assert box.logins == [("convolens", PASSWORD)]
        assert box.envelopes == [("alerts@convolens.test", ["team@example.com", "oncall@example.org"])]
        assert mail["Subject"] == f"[convolens · {project.name}] Firing: Busy <day> & night"
        assert mail["To"] == "team@example.com, oncall@example.org"
        text = mail.get_body(("plain",)).get_content()
        html = mail.get_body(("html",)).get_content()
        link = f"https://cl.example/p/{project.name}/alerts/{rule_pk}"
        assert "messages = 3" in text and link in text and "Rule: Messages — above 1 in a day" in text
        assert "<strong>3</strong>" in html and f'href="{link}"' in html
        assert "Busy &lt;day&gt; &amp; night" in html and "<day>" not in html
        with db.reader() as conn:
            (delivery,) = alerts.deliveries(conn, project.pk)
        assert (delivery["channel"], delivery["status"], delivery["attempts"]) == ("email", "delivered", 1)
        assert PASSWORD not in repr(box.smtp)
    assert not any(PASSWORD in r.getMessage() for r in caplog.records)


def test_a_refused_password_is_retried_and_logged_without_it(database_url, tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with (
        separate_database(database_url, tmp_path, "alert_mail_auth") as db,
        quiet_server(db, tmp_path) as server,
        mail_server("implicit", "convolens", PASSWORD, tmp_path) as box,
    ):
        project, _ = fired_mail_rule(db, server, ["team@example.com"], ["a", "b"])
        now = DAY + timedelta(days=1, minutes=10)
        wrong = SmtpSettings(**{**box.smtp.__dict__, "password": "wrong-" + PASSWORD})
        assert deliver_due(db, "w", now, LOOPBACK, smtp=wrong) == 1
        with db.reader() as conn:
            (failed,) = alerts.deliveries(conn, project.pk)
        assert (failed["status"], failed["attempts"]) == ("pending", 1)
        assert failed["last_error"].startswith("SMTPAuthenticationError")
        assert box.messages == []
        assert deliver_due(db, "w", now + timedelta(seconds=29), LOOPBACK, smtp=box.smtp) == 0  # backoff
        assert deliver_due(db, "w", now + timedelta(seconds=31), LOOPBACK, smtp=box.smtp) == 1  # implicit TLS
        assert len(box.messages) == 1
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "SMTPAuthenticationError" in logged and PASSWORD not in logged


def test_no_smtp_server_is_a_logged_failed_attempt(database_url, tmp_path) -> None:
    with separate_database(database_url, tmp_path, "alert_mail_none") as db, quiet_server(db, tmp_path) as server:
        project, _ = fired_mail_rule(db, server, ["team@example.com"], ["a", "b"])
        now = DAY + timedelta(days=1, minutes=10)
        assert deliver_due(db, "w", now, LOOPBACK) == 1
        with db.reader() as conn:
            (failed,) = alerts.deliveries(conn, project.pk)
        assert "CONVOLENS_SMTP_HOST" in failed["last_error"]


@pytest.mark.parametrize(
    ("to", "field"),
    [
        ([f"u{i}@example.com" for i in range(11)], "email.to"),
        (["team@example.com\r\nBcc: victim@example.com"], "email.to[0]"),
        (["Team <team@example.com>"], "email.to[0]"),
        (["a@b.com, c@d.com"], "email.to[0]"),
        (["user@localhost"], "email.to[0]"),
        ([], "email.to"),
        (["x" * 65 + "@example.com"], "email.to[0]"),
    ],
)
def test_recipients_are_bounded_plain_addresses(server, project, to, field) -> None:
    with server.client(project.admin_token) as admin:
        refused = admin.post("/api/v1/alerts", json=mail_rule(to))
    assert refused.status_code == 422, refused.text
    assert field in refused.text


def test_smtp_settings_from_the_environment() -> None:
    assert SmtpSettings.from_env({}).enabled is False
    implicit = SmtpSettings.from_env({"CONVOLENS_SMTP_HOST": "mail.example", "CONVOLENS_SMTP_TLS": "implicit"})
    assert (implicit.host, implicit.port, implicit.tls) == ("mail.example", 465, "implicit")
    secret = SmtpSettings.from_env({"CONVOLENS_SMTP_HOST": "m", "CONVOLENS_SMTP_PASSWORD": "hunter2"})
    assert secret.port == 587 and secret.password == "hunter2" and "hunter2" not in repr(secret)
    with pytest.raises(ValueError, match="CONVOLENS_SMTP_TLS"):
        SmtpSettings.from_env({"CONVOLENS_SMTP_TLS": "ssl3"})
    with pytest.raises(ValueError, match="CONVOLENS_SMTP_PORT"):
        SmtpSettings.from_env({"CONVOLENS_SMTP_PORT": "70000"})
