"""Statements built once (``ingest.db.Prebuilt``): their bind names are safe to execute with.

SQLAlchemy adds an execution parameter whose name is a column of a table the statement
writes (also in a CTE) to that INSERT's columns or that UPDATE's SET. A prebuilt statement
whose bind parameter is named like such a column would write it: compiled with its bind
names as the parameter keys, its SQL must be what it is without them.
"""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import postgresql

import ingest.pipeline.together  # noqa: F401 - builds the pipeline's statements
from ingest.db import PREBUILT, Prebuilt


@pytest.mark.parametrize("prebuilt", PREBUILT, ids=lambda p: str(PREBUILT.index(p)))
def test_no_bind_parameter_is_named_like_a_column_it_writes(prebuilt: Prebuilt) -> None:
    dialect = postgresql.psycopg2.dialect()
    plain = prebuilt.statement.compile(dialect=dialect)
    names = sorted(name for name, bind in plain.binds.items() if bind.required)  # the caller's
    with_keys = prebuilt.statement.compile(dialect=dialect, column_keys=names)
    assert str(with_keys) == str(plain), f"a bind name among {names} is a column's name"


def test_the_pipeline_statements_are_prebuilt() -> None:
    assert len(PREBUILT) >= 12
