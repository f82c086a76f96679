#!/usr/bin/env python3
"""Assertions for smoke.sh: compare a response body with a capture from a real Strapi 5.

  smoke_check.py shape  ACTUAL CAPTURE   same keys and JSON types, recursively (lists: first item)
  smoke_check.py equal  ACTUAL CAPTURE   equal bodies
  smoke_check.py expr   ACTUAL PYEXPR    PYEXPR is true with `b` bound to the body
CAPTURE is a file of ../shared/strapi-examples/rest/ (its response.body is used; a
preference entry in it gains the attributes added since, with their defaults).
Exit 0 on success, 1 with a message on a mismatch.
"""
import json
import sys


def load_body(path):
    with open(path) as f:
        raw = f.read()
    return json.loads(raw) if raw.strip() else None


# Preference attributes added after the captures were taken (issue 14: quiet hours and the
# digest), with their schema defaults: a captured preference entry is compared with them.
SCHEDULE_DEFAULTS = {"timezone": "UTC", "quiet_hours_start": None, "quiet_hours_end": None,
                     "frequency": "immediate", "digest_hour_local": 8}


def capture_body(path):
    with open(path) as f:
        body = json.load(f)["response"]["body"]
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, dict) and "include_error_details" in data:
        data.update(SCHEDULE_DEFAULTS)
    return body


def kind(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def shape_diff(a, e, path="$"):
    if kind(a) != kind(e):
        return [f"{path}: {kind(a)} ({a!r}) where the capture has {kind(e)} ({e!r})"]
    out = []
    if isinstance(e, dict):
        for k in sorted(set(a) | set(e)):
            if k not in a:
                out.append(f"{path}.{k}: missing")
            elif k not in e:
                out.append(f"{path}.{k}: not in the capture")
            else:
                out += shape_diff(a[k], e[k], f"{path}.{k}")
    elif isinstance(e, list) and a and e:
        out += shape_diff(a[0], e[0], f"{path}[0]")
    return out


def main():
    mode, actual, arg = sys.argv[1:4]
    body = load_body(actual)
    if mode == "shape":
        diff = shape_diff(body, capture_body(arg))
        if diff:
            print("shape differs from " + arg + ":\n  " + "\n  ".join(diff))
            return 1
    elif mode == "equal":
        expected = capture_body(arg)
        if body != expected:
            print(f"body differs from {arg}:\n  got      {json.dumps(body)}\n"
                  f"  expected {json.dumps(expected)}")
            return 1
    elif mode == "expr":
        ok = eval(arg, {}, {"b": body})  # noqa: S307 - our own test expressions
        if not ok:
            print(f"not true: {arg}\n  body {json.dumps(body)}")
            return 1
    else:
        print("unknown mode " + mode)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
