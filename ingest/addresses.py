"""Uploader addresses: taken as the CMS takes them, never a reason to refuse a file.

Strapi's ``email`` attribute is validated with the WHATWG (HTML5) address pattern, which
admits special-use domains such as ``corp.local`` (Active Directory intranets) or
``lab.test``. :func:`usable_address` accepts that pattern, and beyond it anything
email-validator accepts as RFC 5322 syntax with internationalised parts (``josé@exämple.de``)
or a quoted local part; an internationalised domain comes back in its ASCII (punycode) form.
What neither accepts — or a missing value — is not an address: the
file is still ingested and its summary goes to ``FALLBACK_NOTIFICATION_EMAIL``, or is
recorded as skipped (DESIGN §8).
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email

MAX_ADDRESS_LENGTH = 254  # RFC 5321's limit of a forward path

# The WHATWG pattern (https://html.spec.whatwg.org/#valid-e-mail-address), as Strapi uses it.
_HTML5_ADDRESS = re.compile(
    r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)


def usable_address(raw: object) -> str | None:
    """The address to write to, or None when ``raw`` is missing or not an address."""
    if not isinstance(raw, str):
        return None
    value = raw.strip()
    if not value or len(value) > MAX_ADDRESS_LENGTH or any(c in value for c in "\r\n\0"):
        return None
    if _HTML5_ADDRESS.match(value):
        return value
    try:
        valid = validate_email(
            value, check_deliverability=False, globally_deliverable=False,
            test_environment=True, allow_quoted_local=True, allow_smtputf8=True,
        )
    except EmailNotValidError:
        return None
    # An internationalised domain is written in its ASCII (punycode) form, which every mail
    # server takes; a non-ASCII local part needs a server with SMTPUTF8.
    return valid.ascii_email or valid.normalized
