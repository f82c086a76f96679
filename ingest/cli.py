"""The ``ingest`` command: schema migrations and a semantic query of the stored chunks.

    ingest db upgrade            # alembic upgrade head (DATABASE_URL)
    ingest db downgrade [REV]    # alembic downgrade, default: base
    ingest check-config          # validate the environment and print the non-secret settings
    ingest ask "question" [-n 3] # nearest chunks in Chroma for a question
    ingest corrections list      # the breaker and the held corrections
    ingest corrections release   # close the breaker; the held corrections run
    ingest corrections discard   # close the breaker; the held corrections are dropped
    ingest email resend BATCH_ID # send a failed or skipped batch e-mail once more, now
"""

from __future__ import annotations

import argparse
import sys

from ingest.settings import SettingsError, get_settings

_SECRETS = {"cms_api_token", "webhook_token", "webhook_secret", "smtp_password", "status_token"}


def _alembic(action: str, revision: str) -> None:
    from alembic import command

    from ingest.db import alembic_config

    getattr(command, action)(alembic_config(), revision)


def _check_config() -> None:
    settings = get_settings()
    for name, value in sorted(settings.model_dump().items()):
        shown = "***" if name in _SECRETS and value else value
        print(f"{name.upper()}={shown}")


def _ask(question: str, n_results: int) -> None:
    from ingest.adapters.vectors import VectorStore
    from ingest.pipeline.embedding import get_embedder

    settings = get_settings()
    (vector,) = get_embedder(settings.embedding_backend).embed([question])
    for hit in VectorStore(settings).query(vector, n_results=n_results):
        name = hit.metadata.get("file_name")
        print(f"[{hit.distance:.3f}] {name} ({hit.id})\n    {hit.text[:300]}")


def _corrections(action: str) -> None:
    from sqlalchemy import select

    from ingest.corrections import breaker_tripped, release_held
    from ingest.db import session_scope
    from ingest.models import AutoCorrectionTask

    if action in ("release", "discard"):
        count = release_held(get_settings(), discard=action == "discard")
        verb = "discarded" if action == "discard" else "released (they run within a minute)"
        print(f"breaker closed; {count} held correction(s) {verb}")
        return
    with session_scope() as s:
        tripped = breaker_tripped(s)
        held = s.execute(select(AutoCorrectionTask).where(AutoCorrectionTask.status == "held")
                         .order_by(AutoCorrectionTask.id)).scalars().all()
    print(f"breaker: tripped at {tripped.tripped_at:%Y-%m-%d %H:%M:%S}Z: {tripped.reason}"
          if tripped else "breaker: closed")
    for task in held:
        print(f"{task.id}\t{task.failure_category}\t{task.file_document_id}\t"
              f"{', '.join(task.correction_actions)}\t{task.file_name!r}")
    print(f"{len(held)} held correction(s)")


def _email_resend(batch_id: str) -> int:
    import uuid

    from ingest.mail.send import resend

    try:
        batch = uuid.UUID(batch_id)
    except ValueError:
        print(f"ingest: not a batch id: {batch_id!r}", file=sys.stderr)
        return 2
    outcome = resend(batch, get_settings())
    print(f"batch {batch}: {outcome.status}" + (f" ({outcome.detail})" if outcome.detail else ""))
    return 0 if outcome.status in ("sent", "retry") else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ingest`` console script."""
    parser = argparse.ArgumentParser(prog="ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    db = sub.add_parser("db", help="schema migrations").add_subparsers(dest="action",
                                                                       required=True)
    db.add_parser("upgrade", help="upgrade to head")
    down = db.add_parser("downgrade", help="downgrade (default: base)")
    down.add_argument("revision", nargs="?", default="base")
    sub.add_parser("check-config", help="validate the environment")
    ask = sub.add_parser("ask", help="semantic query of the stored chunks")
    ask.add_argument("question")
    ask.add_argument("-n", type=int, default=3)
    corr = sub.add_parser("corrections", help="the correction breaker and held corrections")
    corr.add_argument("action", choices=("list", "release", "discard"))
    email = sub.add_parser("email", help="batch e-mails").add_subparsers(dest="action",
                                                                         required=True)
    email.add_parser("resend", help="re-send a failed or skipped batch e-mail").add_argument(
        "batch_id")
    args = parser.parse_args(argv)
    try:
        if args.command == "db":
            _alembic(args.action, "head" if args.action == "upgrade" else args.revision)
        elif args.command == "check-config":
            _check_config()
        elif args.command == "corrections":
            _corrections(args.action)
        elif args.command == "email":
            return _email_resend(args.batch_id)
        else:
            _ask(args.question, args.n)
    except SettingsError as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
