"""A tc shaping tree on one interface: faulted traffic to one class, everything else untouched.

    root 1: htb default 1
      class 1:1  (unshaped: everything else, control traffic)
      class 1:4  (the fault's traffic) -> leaf qdisc 40: (netem, or tbf for a rate limit)
    u32 filters: control traffic -> 1:1 first, then the fault's matches -> 1:4

htb and u32 are in every distro kernel (prio is not always built, e.g. here). The tree is
ours when the root is `htb 1:`; deleting the root qdisc removes the whole tree.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass

from chaoslab.faults.net.netfilter import prefix
from chaoslab.proc import must, run
from chaoslab.targets import netns

UNSHAPED_CLASS = ("htb", "rate", "100gbit", "quantum", "60000")
NETEM_PROBE = ["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]


@dataclass(frozen=True)
class ShapingTree:
    netns: str | None  # None: the interface is in the host's namespace
    dev: str
    leaf: tuple[str, ...]  # e.g. ("tbf", "rate", "1000000bit", ...) or ("netem", "delay", "40ms")
    control: tuple[tuple[str, ...], ...]  # u32 matches sent to the unshaped class
    # u32 matches of the fault's traffic, one filter each (a peer's address and ports).
    matches: tuple[tuple[str, ...], ...]
    # A remote engine's host's side (`Link.beyond`): after `matches`, this match (the run's
    # network) goes unshaped, then `rest` (everything else, with the fault's ports) is shaped.
    unshaped_after: tuple[str, ...] = ()
    rest: tuple[str, ...] = ()

    def _tc(self, *args: str) -> list[str]:
        return [*prefix(self.netns), "tc", *args]

    def commands(self) -> list[list[str]]:
        dev = ("dev", self.dev)
        out = [self._tc("qdisc", "add", *dev, "root", "handle", "1:", "htb", "default", "1")]
        for cls in ("1:1", "1:4"):  # unshaped, and the fault's (shaped by its leaf)
            out.append(self._tc("class", "add", *dev, "parent", "1:", "classid", cls, *UNSHAPED_CLASS))
        out.append(self._tc("qdisc", "add", *dev, "parent", "1:4", "handle", "40:", *self.leaf))
        for m in self.control:
            out.append(self._filter("1", m, "1:1"))
        for m in self.matches or ((),):
            out.append(self._filter("2", m or ("match", "u32", "0", "0"), "1:4"))
        if self.unshaped_after:
            out.append(self._filter("3", self.unshaped_after, "1:1"))
            out.append(self._filter("4", self.rest, "1:4"))
        return out

    def _filter(self, pref: str, match: tuple[str, ...], flow: str) -> list[str]:
        return self._tc(
            "filter",
            "add",
            "dev",
            self.dev,
            "parent",
            "1:",
            "protocol",
            "ip",
            "prio",
            pref,
            "u32",
            *match,
            "flowid",
            flow,
        )

    def delete_command(self) -> list[str]:
        return self._tc("qdisc", "del", "dev", self.dev, "root")

    def batch(self) -> tuple[list[str], str]:
        """`commands` as one `tc -batch` run: (argv, its input)."""
        lines = [" ".join(argv[argv.index("tc") + 1 :]) for argv in self.commands()]
        return self._tc("-batch", "-"), "\n".join([*lines, ""])

    def create(self) -> None:
        argv, text = self.batch()
        must(argv, stdin=text)

    def _qdiscs(self) -> list[dict[str, object]]:
        if self.netns and not netns.exists(self.netns):
            return []
        res = run(self._tc("-s", "-j", "qdisc", "show", "dev", self.dev), check=False)
        if res.returncode != 0 or not res.stdout.strip():
            return []
        data = json.loads(res.stdout)
        return data if isinstance(data, list) else []

    def ours(self) -> bool:
        return any(
            q.get("root") and q.get("kind") == "htb" and q.get("handle") == "1:" for q in self._qdiscs()
        )

    def leaf_stats(self) -> dict[str, int]:
        """The leaf qdisc's counters: bytes, packets, drops, overlimits."""
        for q in self._qdiscs():
            if q.get("handle") == "40:":
                return {
                    k: int(v)
                    for k in ("bytes", "packets", "drops", "overlimits")
                    if isinstance(v := q.get(k, 0), int)
                }
        return {}

    def delete(self) -> bool:
        """Remove the tree if it is there and ours (recover: nothing is assumed)."""
        if not self.ours():
            return False
        run(self.delete_command(), check=False)
        return True

    def remove(self) -> None:
        """Remove the tree this run created (the revert checks afterwards that it is gone)."""
        run(self.delete_command(), check=False)


@functools.cache
def netem_available() -> bool:
    """Whether this kernel has sch_netem: tried in a throwaway namespace that dies with the command."""
    if shutil.which("tc") is None or shutil.which("unshare") is None:
        return False
    return run(NETEM_PROBE, check=False).returncode == 0
