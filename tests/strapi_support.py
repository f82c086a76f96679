"""The real-Strapi runner of the tests: it lives in :mod:`devtools.strapi` (the demo uses it
too); re-exported here so the tests keep importing it from ``tests.strapi_support``."""

from devtools.strapi import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    CACHE_ROOT,
    KB_PERMISSIONS,
    PROJECT,
    TIMINGS,
    StrapiServer,
    lock_hash,
    node_ok,
    sources_hash,
    variant_app,
)

__all__ = [
    "ADMIN_EMAIL",
    "ADMIN_PASSWORD",
    "CACHE_ROOT",
    "KB_PERMISSIONS",
    "PROJECT",
    "TIMINGS",
    "StrapiServer",
    "lock_hash",
    "node_ok",
    "sources_hash",
    "variant_app",
]
