"""The ``ingest`` command: schema migrations and a semantic query of the stored chunks.

    ingest db upgrade            # alembic upgrade head (DATABASE_URL)
    ingest db downgrade [REV]    # alembic downgrade, default: base
    ingest check-config          # validate the environment and print the non-secret settings
    ingest ask "question" [-n 3] # nearest chunks in Chroma for a question
    ingest corrections list      # the breaker and the held corrections
    ingest corrections release   # close the breaker; the held corrections run
    ingest corrections discard   # close the breaker; the held corrections are dropped
    ingest email resend BATCH_ID # send a failed or skipped batch e-mail once more, now
    ingest probe worker [--node NAME] [--timeout S]  # exit 0 when this host's worker answers
    ingest probe beat            # exit 0 when beat ticked within BEAT_HEARTBEAT_MAX_AGE_SECONDS
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ingest import probes
from ingest.logging_setup import configure_logging
from ingest.settings import SettingsError, get_settings

_SECRETS = {"cms_api_token", "webhook_token", "webhook_secret", "smtp_password", "status_token"}


def _alembic(action: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    root = Path(__file__).resolve().parent.parent
    ini = root / "alembic.ini"
    if not ini.exists():
        raise SystemExit(f"alembic.ini not found next to the package ({root})")
    cfg = Config(str(ini))
    cfg.set_main_option("script_location", str(root / "alembic"))
    getattr(command, action)(cfg, revision)


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


def _probe(args: argparse.Namespace) -> int:
    from ingest.redis_client import get_redis

    settings = get_settings()
    if args.target == "beat":
        result = probes.probe_beat(get_redis(), settings.beat_heartbeat_max_age_seconds)
    else:
        result = probes.probe_worker(get_redis(), settings.broker_url,
                                     probes.node_names(args.node), args.timeout)
    print(result.line, file=sys.stdout if result.ok else sys.stderr)
    return result.exit_code


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
    probe = sub.add_parser("probe", help="healthcheck of this host's worker, or of beat")
    probe.add_argument("target", choices=("worker", "beat"))
    probe.add_argument("--node", action="append", metavar="NAME", type=probes.node_arg,
                       help="worker node name, %%h = this host (repeatable; default celery@%%h)")
    probe.add_argument("--timeout", type=probes.seconds_arg, default=3.0,
                       help="seconds to wait for the answer (worker)")
    args = parser.parse_args(argv)
    try:
        configure_logging()
        if args.command == "db":
            _alembic(args.action, "head" if args.action == "upgrade" else args.revision)
        elif args.command == "check-config":
            _check_config()
        elif args.command == "corrections":
            _corrections(args.action)
        elif args.command == "email":
            return _email_resend(args.batch_id)
        elif args.command == "probe":
            return _probe(args)
        else:
            _ask(args.question, args.n)
    except SettingsError as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
