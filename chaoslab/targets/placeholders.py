"""Placeholders in a target's command line, environment and config files: `{cert}`,
`{targets.cache.host}`, `{ports.https}`... expanded when the target is started, so a service
finds its certificate and its dependencies the same way on every runtime.

Syntax: `{name}` with a dotted name; `{{` and `}}` stand for literal braces. Expansion is a
plain lookup, never evaluation: a value is substituted as text and never expanded again.
In command lines and environment values every brace must be part of a placeholder (a typo
such as `{cert` is an error); in config files (JSON, YAML, TOML are full of braces) only
`{name}` with a placeholder's grammar is one, and any other brace is text.

Names a target can use:
- `cert`, `key`, `ca`: the run's certificate for the target, its key, the run CA (PEM files);
- `workdir`: the run's work directory (logs, generated files);
- `name`: the target's name; `ports.PROTOCOL`: its own ports (`ports.https`, `ports.tcp`...);
- `targets.T.host`, `targets.T.ports.PROTOCOL`: a linked target T as reached from this one;
- `files.N`: the path of config file N of this target, once expanded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
FILE_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_.-]*)\}")
MAX_TEXT = 1 << 20  # a config file to expand is at most 1 MiB


class PlaceholderError(ValueError):
    """A placeholder that is malformed or unknown; the message names it."""


def names(text: str, strict: bool = True) -> list[str]:
    """The placeholder names used in `text`, in order; PlaceholderError if one is malformed
    (`strict`: command lines; a config file's other braces are text)."""
    out = []
    for m in (TOKEN if strict else FILE_TOKEN).finditer(text):
        token = m.group(0)
        if token in ("{{", "}}"):
            continue
        name = m.group(1)
        if name is None:
            raise PlaceholderError(f"a lone {token!r}: write {token * 2} for a literal brace")
        if not NAME.match(name):
            raise PlaceholderError(f"{{{name}}} is not a placeholder name (letters, digits, '.', '_', '-')")
        out.append(name)
    return out


def check(text: str, known: Iterable[str], strict: bool = True) -> list[str]:
    """Problems with the placeholders of `text` against the names a target may use."""
    allowed = set(known)
    try:
        used = names(text, strict)
    except PlaceholderError as exc:
        return [str(exc)]
    return [f"unknown placeholder {{{n}}}" for n in dict.fromkeys(used) if n not in allowed]


def expand(text: str, values: Mapping[str, str], strict: bool = True) -> str:
    """`text` with every placeholder replaced by its value; PlaceholderError for an unknown one."""

    def one(m: re.Match[str]) -> str:
        token = m.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = m.group(1)
        if name is None or name not in values:
            raise PlaceholderError(f"unknown placeholder {token}")
        return values[name]

    return (TOKEN if strict else FILE_TOKEN).sub(one, text)
