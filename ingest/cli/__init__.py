"""The ``ingest`` command: the operator's tool (README, "Operator CLI").

    ingest db upgrade | db downgrade REVISION
    ingest check-config [--json]             # settings, secrets and URL passwords masked
    ingest ask "question" [-n 3] [--json]    # nearest chunks in Chroma
    ingest reprocess DOC_ID [--json]         # the document's latest version, once more
    ingest replay [--status failed] --since 2h [--dry-run] [--json]
    ingest reconcile [--now] [--since 2h] [--json]
    ingest corrections list [--json] | release | discard
    ingest email test --to ADDR | preview BATCH_ID [--out DIR] | resend BATCH_ID
    ingest upload DIR --company ID --bot ID --user EMAIL [--no-wait] [--json]
    ingest status [--batch ID | --user EMAIL | --doc ID] [--json]  # what happened, and where
    ingest probe worker [--node NAME] [--timeout S]  # exit 0 when this host's worker answers
    ingest probe beat                        # exit 0 when beat ticked recently enough

Exit codes: 0 done, 1 the operation failed (the message says why), 2 bad usage or
configuration. With ``--json`` a command prints only JSON on stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from rich.table import Table

from ingest import probes
from ingest.cli import alerts, mail, pipeline, status, upload
from ingest.cli.output import console, duration, emit_json, fail, shown_settings
from ingest.logging_setup import configure_logging
from ingest.settings import SettingsError, get_settings

Command = Callable[[argparse.Namespace], int]


def _alembic(args: argparse.Namespace) -> int:
    from alembic import command

    from ingest.db import alembic_config

    getattr(command, args.action)(alembic_config(),
                                  "head" if args.action == "upgrade" else args.revision)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    shown = shown_settings(get_settings().model_dump())
    if args.json:
        emit_json(shown)
    else:
        for name, value in shown.items():
            console.print(f"{name}={value}", markup=False)
    return 0


def _ask(args: argparse.Namespace) -> int:
    from ingest.adapters.vectors import VectorStore
    from ingest.pipeline.embedding import get_embedder

    settings = get_settings()
    (vector,) = get_embedder(settings.embedding_backend).embed([args.question])
    hits = VectorStore(settings).query(vector, n_results=args.n)
    if args.json:
        emit_json([{"id": h.id, "document_id": h.document_id, "distance": h.distance,
                    "file_name": h.metadata.get("file_name"), "text": h.text} for h in hits])
        return 0
    for hit in hits:
        console.print(f"[{hit.distance:.3f}] {hit.metadata.get('file_name')} ({hit.id})\n"
                      f"    {hit.text[:300]}", markup=False)
    return 0


def _corrections(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from ingest.corrections import breaker_tripped, release_held
    from ingest.db import session_scope
    from ingest.models import AutoCorrectionTask

    if args.action in ("release", "discard"):
        count = release_held(get_settings(), discard=args.action == "discard")
        verb = "discarded" if args.action == "discard" else "released (they run within a minute)"
        console.print(f"breaker closed; {count} held correction(s) {verb}")
        return 0
    with session_scope() as s:
        tripped = breaker_tripped(s)
        held = s.execute(select(AutoCorrectionTask).where(AutoCorrectionTask.status == "held")
                         .order_by(AutoCorrectionTask.id)).scalars().all()
    if args.json:
        emit_json({
            "breaker": ({"tripped_at": tripped.tripped_at, "reason": tripped.reason}
                        if tripped else None),
            "held": [{"id": t.id, "category": t.failure_category,
                      "document_id": t.file_document_id, "actions": t.correction_actions,
                      "file_name": t.file_name, "created_at": t.created_at} for t in held]})
        return 0
    console.print(f"breaker: [red]tripped[/] at {tripped.tripped_at:%Y-%m-%d %H:%M:%S}Z: "
                  f"{tripped.reason}" if tripped else "breaker: [green]closed[/]")
    grid = Table("id", "category", "actions", "file", title="held corrections")
    grid.add_column("document", no_wrap=True, min_width=24)  # ids are copied whole
    for task in held:
        grid.add_row(str(task.id), task.failure_category, ", ".join(task.correction_actions),
                     task.file_name or "", task.file_document_id)
    console.print(grid)
    console.print(f"{len(held)} held correction(s)")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    """Every command, each with its handler as ``run``."""
    parser = argparse.ArgumentParser(prog="ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def json_flag(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    db = sub.add_parser("db", help="schema migrations").add_subparsers(dest="action",
                                                                       required=True)
    db.add_parser("upgrade", help="upgrade to head").set_defaults(run=_alembic)
    down = db.add_parser("downgrade", help="downgrade to REVISION (e.g. -1, base)")
    down.add_argument("revision", help="required: where to go (-1, a revision id, base)")
    down.set_defaults(run=_alembic)
    json_flag(sub.add_parser("check-config", help="validate the environment")).set_defaults(
        run=_check_config)
    ask = json_flag(sub.add_parser("ask", help="semantic query of the stored chunks"))
    ask.add_argument("question")
    ask.add_argument("-n", type=int, default=3)
    ask.set_defaults(run=_ask)
    corr = json_flag(sub.add_parser("corrections", help="the breaker and held corrections"))
    corr.add_argument("action", choices=("list", "release", "discard"))
    corr.set_defaults(run=_corrections)

    again = json_flag(sub.add_parser("reprocess", help="process a document's latest stored "
                                                       "version again"))
    again.add_argument("document_id", metavar="DOC_ID")
    again.set_defaults(run=pipeline.reprocess)
    replay = json_flag(sub.add_parser("replay", help="re-drive events in a status"))
    replay.add_argument("--status", choices=pipeline.REPLAYABLE, default="failed")
    replay.add_argument("--since", type=duration, required=True,
                        help="updated within this window: 90s, 15m, 2h, 1d")
    replay.add_argument("--dry-run", action="store_true", help="list them, change nothing")
    replay.set_defaults(run=pipeline.replay)
    recon = json_flag(sub.add_parser("reconcile", help="look for CMS entries whose webhook "
                                                       "never arrived"))
    recon.add_argument("--now", action="store_true", help="run here and now (default: queue "
                                                          "it for a worker)")
    recon.add_argument("--since", type=duration, default=None,
                       help="read entries changed within this window, not from the checkpoint")
    recon.set_defaults(run=pipeline.reconcile)
    mail.register(sub)
    alerts.register(sub)
    upload.register(sub)
    status.register(sub)
    probe = sub.add_parser("probe", help="healthcheck of this host's worker, or of beat")
    probe.add_argument("target", choices=("worker", "beat"))
    probe.add_argument("--node", action="append", metavar="NAME", type=probes.node_arg,
                       help="worker node name, %%h = this host (repeatable; default celery@%%h)")
    probe.add_argument("--timeout", type=probes.seconds_arg, default=3.0,
                       help="seconds to wait for the answer (worker)")
    probe.set_defaults(run=_probe)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ingest`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "reconcile" and args.since is not None and not args.now:
        return fail("--since needs --now", 2)
    run: Command = args.run
    try:
        configure_logging()
        return run(args)
    except SettingsError as exc:
        return fail(str(exc), 2)


if __name__ == "__main__":
    sys.exit(main())
