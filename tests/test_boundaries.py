"""Dependency boundaries of DESIGN §2: the web process and the domain stay light."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["torch", "sentence_transformers", "chromadb", "boto3", "pypdf", "docx",
         "workers", "workers.tasks.ingest"]


def _modules_after_import(statement: str) -> set[str]:
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_web_app_imports_no_task_code_nor_embedding_or_storage_libraries() -> None:
    loaded = _modules_after_import(
        "from webhooks.app import create_app\n"
        "from ingest.settings import get_settings\n"
        "create_app(get_settings())"
    )
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_domain_package_imports_neither_flask_nor_celery() -> None:
    loaded = _modules_after_import(
        "import ingest.pipeline.run, ingest.events, ingest.models, ingest.preferences"
    )
    assert "flask" not in loaded
    assert "celery" not in loaded
    assert "webhooks" not in loaded and "workers" not in loaded
