"""The e-mail channel: one message (plain text and HTML) through the operator's SMTP server, one attempt.

The server is the operator's (``CONVOLENS_SMTP_*``): STARTTLS on 587 by default, implicit TLS (465) or
none (a relay on the same host), the certificate verified against the system's CAs or
``CONVOLENS_SMTP_CA_FILE``. Recipients are project data, checked when the rule or the member was saved
(schemas/alerts.py ``Address``). The password goes to the server's AUTH only: an error text carrying it
(a server echoing it back) has it replaced before it is logged or stored.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from convolens.config import SmtpSettings


def message(smtp: SmtpSettings, to: list[str], subject: str, text: str, html: str, key: str) -> EmailMessage:
    """The message; ``key`` (the delivery's id) makes its Message-ID, the same on every retry."""
    mail = EmailMessage()
    mail["From"] = smtp.sender
    mail["To"] = ", ".join(to)
    mail["Subject"] = " ".join(subject.split())[:200]  # one line, whatever the rule's name held
    mail["Date"] = formatdate(usegmt=True)
    domain = smtp.sender.rpartition("@")[2] or "convolens.localhost"
    mail["Message-ID"] = make_msgid(idstring=key, domain=domain)
    mail.set_content(text)
    mail.add_alternative(html, subtype="html")
    return mail


def send(smtp: SmtpSettings, mail: EmailMessage) -> str | None:
    """Send it; None when the server accepted it, else what went wrong (without the password)."""
    if not smtp.enabled:
        return "no SMTP server is configured (CONVOLENS_SMTP_HOST)"
    assert smtp.host is not None
    context = ssl.create_default_context(cafile=smtp.ca_file)
    try:
        if smtp.tls == "implicit":
            client: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
        with client:
            if smtp.tls == "starttls":
                client.starttls(context=context)
            if smtp.user:
                client.login(smtp.user, smtp.password or "")
            refused = client.send_message(mail)
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        return _without_secret(f"{type(exc).__name__}: {exc}", smtp.password)[:500]
    if refused:
        return _without_secret(f"refused recipients: {', '.join(sorted(refused))}", smtp.password)[:500]
    return None


def _without_secret(text: str, secret: str | None) -> str:
    return text.replace(secret, "[password]") if secret else text
