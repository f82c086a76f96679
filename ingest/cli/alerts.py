"""``ingest alerts list|ack``: the operator alerts and their escalation."""

from __future__ import annotations

import argparse
import getpass

from rich.table import Table
from sqlalchemy import select

from ingest.cli.output import console, emit_json, fail


def list_alerts(args: argparse.Namespace) -> int:
    """The open alerts (not acknowledged), newest first; ``--all`` includes the others."""
    from ingest.db import session_scope
    from ingest.models import OperatorAlert

    with session_scope() as s:
        query = select(OperatorAlert).order_by(OperatorAlert.id.desc()).limit(args.limit)
        if not args.all:
            query = query.where(OperatorAlert.acked_at.is_(None))
        rows = [{"id": a.id, "kind": a.kind, "subject": a.subject, "status": a.status,
                 "rounds": a.rounds, "last_round_at": a.last_round_at, "error": a.error,
                 "acked_at": a.acked_at, "acked_by": a.acked_by, "created_at": a.created_at}
                for a in s.execute(query).scalars()]
    if args.json:
        emit_json(rows)
        return 0
    table = Table(title="Operator alerts" + ("" if args.all else " (not acknowledged)"))
    for name in ("id", "kind", "status", "rounds", "last sent (UTC)", "acked", "subject"):
        table.add_column(name)
    for r in rows:
        last = r["last_round_at"]
        table.add_row(str(r["id"]), r["kind"], r["status"], str(r["rounds"]),
                      last.strftime("%Y-%m-%d %H:%M:%S") if last else "–",
                      r["acked_by"] or "", r["subject"])
    console.print(table)
    return 0


def ack(args: argparse.Namespace) -> int:
    """Acknowledge an alert: it is not sent again."""
    from ingest.mail.alerts import acknowledge

    who = args.by or getpass.getuser()
    if not acknowledge(args.alert_id, who):
        return fail(f"alert {args.alert_id} does not exist or was acknowledged already")
    console.print(f"alert {args.alert_id}: acknowledged by {who}; it will not be sent again")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``alerts`` command and its actions."""
    alerts = sub.add_parser("alerts", help="operator alerts and their escalation"
                            ).add_subparsers(dest="action", required=True)
    show = alerts.add_parser("list", help="alerts not acknowledged yet (--all: every alert)")
    show.add_argument("--all", action="store_true")
    show.add_argument("--limit", type=int, default=50)
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(run=list_alerts)
    done = alerts.add_parser("ack", help="acknowledge an alert: stop its repeats")
    done.add_argument("alert_id", type=int)
    done.add_argument("--by", help="who acknowledges (default: the OS user)")
    done.set_defaults(run=ack)
