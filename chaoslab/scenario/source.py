"""A scenario file's text and its YAML, read defensively: what a user points chaoslab at may be
anything (a FIFO, /dev/zero, a binary, a YAML alias bomb), and validation must end quickly
with a message, never hang, exhaust memory or print a traceback.

- the file must be a regular file of at most MAX_BYTES, UTF-8; it is opened non-blocking, so
  a FIFO without a writer is refused at once instead of waiting for one;
- the YAML is parsed by libyaml when PyYAML has it (linear time), composed into nodes, and the
  nodes are checked before any Python value is built: nesting depth, what anchors and aliases
  expand to, duplicate keys (YAML says a key is unique; PyYAML silently keeps the last), and
  numbers no field can take (more than 15 digits, infinities, NaN).
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from chaoslab.quote import show
from chaoslab.scenario.fields import Problems

MAX_BYTES = 1 << 20  # a scenario is a few kB; 1 MiB leaves room for long request bodies
MAX_DEPTH = 32  # a scenario nests 6 levels deep
MAX_VALUES = 100_000  # values after every alias is expanded
MAX_DIGITS = 15  # no field takes a number this long (a float keeps 15-16 significant digits)
INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"
MERGE_TAG = "tag:yaml.org,2002:merge"
Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SourceError(Exception):
    """The file or its YAML cannot be read; `problems` says why, with a place."""

    def __init__(self, problems: Problems) -> None:
        super().__init__("; ".join(p.render() for p in problems))
        self.problems = problems


def _fail(where: str, message: str, hint: str = "") -> SourceError:
    problems = Problems()
    problems.add(where, message, hint)
    return SourceError(problems)


KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def read_text(path: Path) -> str:
    """The text of a scenario file; SourceError when it is not a small UTF-8 regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise _fail("<file>", f"cannot read {path}: {exc.strerror}", "check the path") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise _fail("<file>", f"{path} is {what}, not a scenario file", "give a YAML file")
        if st.st_size > MAX_BYTES:
            raise _fail("<file>", f"{path} is {st.st_size} bytes: a scenario is at most {MAX_BYTES} bytes")
        chunks, size = [], 0
        while size <= MAX_BYTES and (chunk := os.read(fd, 1 << 16)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise _fail("<file>", f"cannot read {path}: {exc.strerror}", "check the path") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_BYTES:
        raise _fail("<file>", f"{path} is over {MAX_BYTES} bytes: a scenario is at most that")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _fail(
            f"line {line}",
            f"{path} is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})",
            "save the file as UTF-8",
        ) from None


def load_yaml(text: str) -> object:
    """The YAML document in `text` as Python values; SourceError with every problem the node
    checks found, or the parser's own error with its line."""
    if len(text) > MAX_BYTES:
        raise _fail("<file>", f"the scenario is over {MAX_BYTES} characters")
    loader = Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<file>"
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise _fail(where, f"not valid YAML: {problem}", "check indentation and quoting") from None
        except RecursionError:
            raise _fail("<file>", f"nested more than {MAX_DEPTH} levels deep") from None
        if node is None:
            return None
        problems = check_nodes(node)
        if problems:
            raise SourceError(problems)
        try:
            return loader.construct_document(node)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<file>"
            raise _fail(where, f"not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    finally:
        loader.dispose()


def _where(node: Node) -> str:
    return f"line {node.start_mark.line + 1}, column {node.start_mark.column + 1}"


def check_nodes(root: Node) -> Problems:
    """Depth, expanded size, duplicate keys and numbers of a composed document, walked without
    recursion; an alias is a node met again, counted at its full expanded size."""
    problems = Problems()
    sizes: dict[int, int] = {}  # id(node) -> values below it, aliases expanded
    # (node, depth, children done?) in post-order, so a node's size is its children's sum
    stack: list[tuple[Node, int, bool]] = [(root, 1, False)]
    on_path: set[int] = set()
    aliased = False
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes.get(id(c), 1) for c in _children(node))
            if sizes[key] > MAX_VALUES:
                problems.add(
                    _where(node),
                    f"anchors and aliases here expand to more than {MAX_VALUES} values"
                    if aliased
                    else f"more than {MAX_VALUES} values: a scenario has a few hundred",
                    "write the values out, or use fewer aliases" if aliased else "",
                )
                return problems
            continue
        if key in sizes or key in on_path:
            aliased = True
            continue  # met again through an alias: counted in its parent's sum
        if depth > MAX_DEPTH:
            problems.add(_where(node), f"nested more than {MAX_DEPTH} levels deep")
            return problems
        if isinstance(node, ScalarNode):
            _check_scalar(node, problems)
            sizes[key] = 1
            continue
        if isinstance(node, MappingNode):
            _check_keys(node, problems)
        on_path.add(key)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in _children(node))
    return problems


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_keys(node: MappingNode, problems: Problems) -> None:
    seen: dict[tuple[str, str], Node] = {}
    for k, _ in node.value:
        if not isinstance(k, ScalarNode) or k.tag == MERGE_TAG:
            continue
        ident = (k.tag, k.value)
        first = seen.get(ident)
        if first is not None:
            problems.add(
                _where(k),
                f"key {show(k.value)} is given twice (first at line {first.start_mark.line + 1})",
                "a key appears once per mapping: remove one",
            )
        else:
            seen[ident] = k


def _check_scalar(node: ScalarNode, problems: Problems) -> None:
    if node.tag == INT_TAG:
        digits = sum(c.isdigit() for c in node.value)
        if digits > MAX_DIGITS:
            problems.add(
                _where(node), f"a number of {digits} digits: no value here takes more than {MAX_DIGITS}"
            )
    elif node.tag == FLOAT_TAG:
        value = _FLOATS.construct_yaml_float(node)
        mantissa = node.value.lower().split("e")[0]
        if not math.isfinite(value) or sum(c.isdigit() for c in mantissa) > MAX_DIGITS + 2:
            problems.add(_where(node), f"{show(node.value)} is not a number any value here takes")


_FLOATS = yaml.constructor.SafeConstructor()
