"""User text in messages: bounded, with control characters made visible.

A scenario's values reach error messages; a message must stay short whatever the value is (a
YAML alias expands to millions of items), and must not carry terminal escapes or newlines.
"""

from __future__ import annotations

import reprlib

_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 4
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlong = 20


def show(value: object) -> str:
    """`repr(value)`, cut to a few dozen characters (strings quoted, escapes visible)."""
    return _REPR.repr(value)
