"""Every task the worker registers goes to a known queue by an explicit route.

A task without a route would land on ``task_default_queue`` (ingest), behind hours of
embedding; one routed to a queue no worker consumes would never run. Celery's own router
(``app.amqp.router``) resolves each name, exactly as ``send_task`` does.
"""

from __future__ import annotations

from typing import Any

import celeryconfig
from ingest import names
from ingest.names import QUEUES

#: The intended mapping: what a deployment's ``-Q`` lists are planned around (README).
EXPECTED = {
    names.TASK_PROCESS_FILE_EVENT: names.QUEUE_INGEST,
    names.TASK_SEND_BATCH_EMAIL: names.QUEUE_NOTIFICATIONS,
    names.TASK_SEND_DIGEST: names.QUEUE_NOTIFICATIONS,
    names.TASK_PLAN_CHANNELS: names.QUEUE_NOTIFICATIONS,
    names.TASK_DELIVER_CHANNEL: names.QUEUE_NOTIFICATIONS,
    names.TASK_CHECK_BATCH: names.QUEUE_NOTIFICATIONS,
    names.TASK_SWEEP_BATCHES: names.QUEUE_NOTIFICATIONS,
    names.TASK_RELAY_OUTBOX: names.QUEUE_NOTIFICATIONS,
    names.TASK_RUN_CORRECTION: names.QUEUE_CORRECTIONS,
    names.TASK_RECONCILE_CMS: names.QUEUE_CORRECTIONS,
    names.TASK_SNAPSHOT_METRICS: names.QUEUE_NOTIFICATIONS,
}


def _ours(celery_app: Any) -> set[str]:
    celery_app.loader.import_default_modules()  # the ``include`` modules register the tasks
    return {name for name in celery_app.tasks if name.startswith("kb_ingest.")}


def test_every_registered_task_has_an_explicit_route_to_a_known_queue(celery_app: Any
                                                                      ) -> None:
    registered = _ours(celery_app)
    declared = {queue.name for queue in celeryconfig.task_queues}

    assert registered, "the worker registers no kb_ingest task"
    assert registered <= set(celeryconfig.task_routes), (
        f"without a route: {sorted(registered - set(celeryconfig.task_routes))}")
    for name in registered:
        queue = celery_app.amqp.router.route({}, name)["queue"]
        assert queue.name in QUEUES and queue.name in declared, (name, queue.name)


def test_the_mapping_is_the_intended_one(celery_app: Any) -> None:
    routed = {name: celery_app.amqp.router.route({}, name)["queue"].name
              for name in _ours(celery_app)}
    task_names = {value for key, value in vars(names).items() if key.startswith("TASK_")}

    assert routed == EXPECTED
    assert task_names == set(EXPECTED)  # every name the code publishes is a registered task
