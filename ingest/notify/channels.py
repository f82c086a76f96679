"""The registry of chat and webhook channels, and how one message is posted through Apprise.

A bot's channel is one Apprise URL. Three kinds are accepted, each a :class:`Notifier` in
:data:`NOTIFIERS`:

- ``slack``: ``slack://…`` or ``https://hooks.slack.com/services/…`` (incoming webhook);
- ``teams``: ``workflows://…`` or the ``https://…logic.azure.com/workflows/…`` URL of a
  Power Automate workflow (Microsoft Teams' incoming webhooks);
- ``webhook``: ``json://`` / ``jsons://`` (Apprise's JSON webhook), signed with
  ``X-KB-Signature`` (``ingest.notify.signing``) and carrying an ``Idempotency-Key``.

Any other URL is refused (``ValueError``), so a CMS editor cannot point the service at an
arbitrary protocol. User text (file names, error messages) is cleaned and escaped for the
channel: it is posted as plain text, which Apprise escapes for each (on Slack ``<``, ``>``
and ``&``, with formatting off, so a file named ``<!channel>`` can never ping a whole
channel; Markdown for Teams). The channel's URL holds its secret: only its privacy-masked
form (:attr:`Target.label`) is logged or shown.

E-mail is not a channel of this registry: the uploader's summary e-mail keeps its own path
(``ingest.mail``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import apprise

from ingest.batches import subject_for
from ingest.mail.render import BatchSummary, batch_summary_context
from ingest.preferences import Preferences

log = logging.getLogger(__name__)
# Apprise's own lines may quote a channel URL (its secret): they are captured per post
# (LogCapture) and summarised by us, never passed on to the service's log.
logging.getLogger("apprise").propagate = False

# Apprise logs a failed post as "…, error=<HTTP status>." (custom_json, slack, workflows).
_HTTP_STATUS = re.compile(r"error=(\d{3})\b")
_PERMANENT_4XX_EXCEPT = (408, 425, 429)


@dataclass(frozen=True)
class Post:
    """What to post: Apprise's title and body, and extra HTTP headers (webhook only)."""

    title: str
    body: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PostResult:
    """``ok``; else whether trying again may help, and what went wrong (no secrets)."""

    ok: bool
    transient: bool = False
    detail: str = ""


@dataclass(frozen=True)
class Notifier:
    """One kind of channel: which Apprise plugins it accepts and how it words a summary."""

    kind: str
    plugins: tuple[str, ...]  # Apprise plugin class names
    render: Callable[[dict[str, Any]], str]
    signed: bool = False


@dataclass(frozen=True)
class Target:
    """A validated channel URL: its kind, masked label and stable key."""

    kind: str
    url: str
    label: str

    @property
    def key(self) -> str:
        """A stable, secret-free id of the URL (for idempotency keys)."""
        return hashlib.sha256(self.url.encode()).hexdigest()[:16]


def _chat(context: dict[str, Any]) -> str:
    """Plain text for Slack and Teams: posted as ``body_format=text``, so Apprise escapes
    it for each (``&``, ``<``, ``>`` on Slack with ``mrkdwn`` off; Markdown for Teams)."""
    lines = [
        context["status_text"],
        f"{context['succeeded']} succeeded, {context['failed']} failed of {context['total']} "
        f"files in {context['duration']} (finished {context['finished']}).",
        f"Batch {context['batch_id']}, uploaded by {context['uploader']}.",
    ]
    if context["failures"]:
        lines += ["", "Failed:"]
        for f in context["failures"]:
            reason = f": {f.reason}" if f.reason else ""
            lines.append(f"- {f.name} ({f.label}{reason})")
            if f.correction:
                lines.append(f"  {f.correction}")
    if context["failures_more"]:
        lines.append(f"- … and {context['failures_more']} more")
    if context["successes"]:
        lines += ["", "Ingested:"]
        lines += [f"- {s.name} ({s.chunks} chunks)" for s in context["successes"]]
    if context["successes_more"]:
        lines.append(f"- … and {context['successes_more']} more")
    return "\n".join(lines)


def _webhook(context: dict[str, Any]) -> str:
    """The signed JSON document (``message`` of Apprise's JSON body)."""
    return json.dumps({
        "type": "batch_summary",
        "batch_id": context["batch_id"],
        "company_id": context["company_id"],
        "bot_id": context["bot_id"],
        "uploader": context["uploader"],
        "status": context["status"],
        "total": context["total"],
        "succeeded": context["succeeded"],
        "failed": context["failed"],
        "finished_at": context["finished_at"],
        "failures": [{"name": f.name, "category": f.category, "reason": f.reason,
                      "correction": f.correction or None} for f in context["failures"]],
        "failures_more": context["failures_more"],
        "successes": [{"name": s.name, "chunks": s.chunks} for s in context["successes"]],
        "successes_more": context["successes_more"],
        "idempotency_key": context["idempotency_key"],
    }, ensure_ascii=False)


#: Every channel kind, by name (the ``channel`` column of ``channel_deliveries``).
NOTIFIERS: dict[str, Notifier] = {
    n.kind: n for n in (
        Notifier("slack", ("NotifySlack",), _chat),
        Notifier("teams", ("NotifyWorkflows",), _chat),
        Notifier("webhook", ("NotifyJSON",), _webhook, signed=True),
    )
}


def quiet_apprise() -> Any:
    """A context manager capturing Apprise's warnings (what went wrong) in a StringIO."""
    return apprise.LogCapture(level=logging.WARNING)


def _instantiate(url: str) -> Any:
    return apprise.Apprise.instantiate(url, suppress_exceptions=True)


def parse_target(url: Any) -> Target:
    """Validate one configured channel URL; ``ValueError`` names what is wrong."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("a channel must be a non-empty Apprise URL string")
    if len(url) > 2000:
        raise ValueError("a channel URL must be at most 2,000 characters")
    url = url.strip()
    plugin = _instantiate(url)
    if plugin is None:
        raise ValueError("not a valid Apprise URL")
    name = type(plugin).__name__
    for notifier in NOTIFIERS.values():
        if name in notifier.plugins:
            return Target(notifier.kind, url, plugin.url(privacy=True).split("?", 1)[0])
    raise ValueError(f"unsupported channel type (only {', '.join(NOTIFIERS)} are accepted)")


def summary_context(summary: BatchSummary, *, list_cap: int,
                    idempotency_key: str) -> dict[str, Any]:
    """The batch summary as the channels word it (every detail shown, lists capped)."""
    context = batch_summary_context(summary, Preferences(), from_name="", list_cap=list_cap)
    failures = [f for f in summary.files if not f.succeeded][:len(context["failures"])]
    context["failures"] = [
        _Failure(view.name, view.label, view.reason, view.correction, line.error_category)
        for view, line in zip(context["failures"], failures, strict=True)
    ]
    context.update(company_id=summary.company_id, bot_id=summary.bot_id,
                   uploader=summary.user_email, idempotency_key=idempotency_key,
                   finished_at=summary.finished_at.isoformat())
    return context


@dataclass(frozen=True)
class _Failure:
    name: str
    label: str
    reason: str
    correction: str
    category: str | None


def build_post(target: Target, summary: BatchSummary, *, list_cap: int, idempotency_key: str,
               secret: str | None) -> Post:
    """The post of a batch summary to one channel; ``ValueError`` if it cannot be signed."""
    notifier = NOTIFIERS[target.kind]
    context = summary_context(summary, list_cap=list_cap, idempotency_key=idempotency_key)
    title = f"Knowledge base upload: {subject_for(summary.succeeded, summary.failed)}"
    body = notifier.render(context)
    headers: dict[str, str] = {}
    if notifier.signed:
        from ingest.notify.signing import HEADER, IDEMPOTENCY_HEADER, sign

        if not secret:
            raise ValueError("NOTIFY_WEBHOOK_SECRET is not set: a webhook is never sent "
                             "unsigned")
        headers = {HEADER: sign(secret, body), IDEMPOTENCY_HEADER: idempotency_key}
    return Post(title=title, body=body, headers=headers)


def post(target: Target, message: Post, *, timeout: float) -> PostResult:
    """Post through Apprise (one try). A 4xx other than 408/425/429 is permanent; a
    connection error, a timeout or a 5xx may pass."""
    plugin = _instantiate(target.url)
    if plugin is None:
        return PostResult(False, detail="the channel URL no longer parses")
    plugin.socket_connect_timeout = timeout
    plugin.socket_read_timeout = timeout
    if message.headers:
        plugin.headers.update(message.headers)
    with quiet_apprise() as captured:
        ok = plugin.notify(body=message.body, title=message.title,
                           body_format=apprise.NotifyFormat.TEXT)
    if ok:
        return PostResult(True)
    logged = captured.getvalue()
    status = _HTTP_STATUS.search(logged)
    if status:
        code = int(status.group(1))
        transient = code >= 500 or code in _PERMANENT_4XX_EXCEPT or code < 400
        return PostResult(False, transient=transient,
                          detail=f"{target.kind} answered HTTP {code}")
    last = next((line for line in reversed(logged.splitlines()) if line.strip()), "")
    detail = last.split(" - ", 2)[-1][:300] if last else "no answer"
    return PostResult(False, transient=True, detail=f"{target.kind} not reached: {detail}")
