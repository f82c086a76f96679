"""The wheel carries the e-mail templates and the migrations: an installed kb-ingest (the
image, with no editable install and no source tree) renders e-mails and runs
``ingest db upgrade``.

The wheel is built from a copy of only what the Dockerfile copies, then unpacked (a pure
wheel's install is its unpacking) and used from a fresh interpreter that cannot see this
checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from ingest.models import Base
from tests.helpers import table_names

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "celeryconfig.py", "ingest", "workers", "webhooks",
           "devtools")
DATA_DIRS = ("ingest/templates", "ingest/migrations")

CHECK = """
import ingest, sys
from pathlib import Path
from alembic.script import ScriptDirectory
from ingest.db import alembic_config
from ingest.mail.render import EmailType, render_templates

assert Path(ingest.__file__).is_relative_to(sys.argv[1]), ingest.__file__
subject, text, html = render_templates(
    EmailType.OPERATOR_ALERT,
    {"kind": "k", "headline": "packaged", "ref": "r1", "details": "from the wheel"})
print(subject)
print(html is not None and "from the wheel" in html)
print(ScriptDirectory.from_config(alembic_config()).get_current_head())

from ingest.cli import main
sys.exit(main(["db", "upgrade"]))
"""


def _data_files() -> set[str]:
    """Every template and migration file of the source tree, as wheel paths."""
    return {
        str(path.relative_to(ROOT))
        for folder in DATA_DIRS
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.name != "README.md"
    }


def _build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (wheel,) = out.glob("kb_ingest-*.whl")
    return wheel


def test_the_wheel_renders_and_migrates_without_the_source_tree(tmp_path: Path,
                                                                scratch_url: str) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        site = tmp_path / "site"
        archive.extractall(site)

    missing = _data_files() - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "PYTHONPATH": str(site), "DATABASE_URL": scratch_url}
    run = subprocess.run([sys.executable, "-P", "-c", CHECK, str(site)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    subject, html_ok, head = run.stdout.split("\n")[:3]
    assert subject == "kb-ingest: packaged (r1)"
    assert html_ok == "True"
    assert head == max(path.stem.split("_")[0] for path in
                       (ROOT / "ingest/migrations/versions").glob("0*.py"))
    assert set(Base.metadata.tables) <= table_names(scratch_url)  # `ingest db upgrade` ran
