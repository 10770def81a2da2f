"""An iptables chain of one fault inside a namespace, jumped to from OUTPUT or INPUT.

All of a fault's rules live in its own chain, each tagged with a `chaoslab:<label>`
comment, so their packet counters can be read back (drops counted, packets seen) and the
whole fault goes away with one jump deleted and one chain flushed and removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chaoslab.proc import must, run
from chaoslab.targets import netns

_COUNTER = re.compile(r"^\s*(\d+)\s+(\d+)\s.*/\* chaoslab:(\S+) \*/")


def prefix(ns: str | None) -> list[str]:
    return netns.enter_argv(ns) if ns else []


@dataclass(frozen=True)
class Rule:
    label: str
    args: tuple[str, ...]  # matches and target, e.g. ("-p", "tcp", "-j", "DROP")


@dataclass(frozen=True)
class Chain:
    netns: str
    name: str
    hook: str  # OUTPUT (egress) or INPUT (ingress)
    # (interface, peer address) of each link the fault is on: links may share an interface
    # (a container's eth0), so the jump matches the peer's address too.
    jumps: tuple[tuple[str, str], ...]

    def _jump(self, iface: str, addr: str) -> tuple[str, ...]:
        """Into the chain from the hook, for one link: its interface and, when known, its peer
        (`!NET/LEN`: every address off that network, a remote engine's host's side)."""
        side = "-d" if self.hook == "OUTPUT" else "-s"
        peer = (("!", side, addr[1:]) if addr.startswith("!") else (side, addr)) if addr else ()
        return ("-o" if self.hook == "OUTPUT" else "-i", iface, *peer, "-j", self.name)

    def _ipt(self, *args: str) -> list[str]:
        return [*prefix(self.netns), "iptables", "-w", "-t", "filter", *args]

    def commands(self, rules: list[Rule]) -> list[list[str]]:
        """The chain, its rules and its jumps, one iptables command each (as `create` applies them)."""
        out = [self._ipt("-N", self.name)]
        for r in rules:
            out.append(
                self._ipt("-A", self.name, *r.args, "-m", "comment", "--comment", f"chaoslab:{r.label}")
            )
        for iface, addr in self.jumps:
            out.append(self._ipt("-I", self.hook, "1", *self._jump(iface, addr)))
        return out

    def restore_argv(self) -> list[str]:
        return [*prefix(self.netns), "iptables-restore", "-w", "--noflush"]

    def restore_input(self, rules: list[Rule]) -> str:
        """`commands` as one iptables-restore transaction: one process, applied atomically."""
        lines = ["*filter"]
        for argv in self.commands(rules):
            lines.append(" ".join(_quote(a) for a in argv[argv.index("filter") + 1 :]))
        return "\n".join([*lines, "COMMIT", ""])

    def delete_commands(self) -> list[list[str]]:
        jumps = [self._ipt("-D", self.hook, *self._jump(i, a)) for i, a in self.jumps]
        return [*jumps, self._ipt("-F", self.name), self._ipt("-X", self.name)]

    def create(self, rules: list[Rule]) -> None:
        must(self.restore_argv(), stdin=self.restore_input(rules))

    def exists(self) -> bool:
        if not netns.exists(self.netns):
            return False
        return run(self._ipt("-S", self.name), check=False).returncode == 0

    def counters(self) -> dict[str, int]:
        """Packets each labelled rule matched so far."""
        res = run(self._ipt("-L", self.name, "-n", "-v", "-x"), check=False)
        out: dict[str, int] = {}
        for line in res.stdout.splitlines():
            m = _COUNTER.match(line)
            if m:
                out[m.group(3)] = out.get(m.group(3), 0) + int(m.group(1))
        return out

    def remove(self) -> None:
        """Remove what `create` made, in one iptables-restore transaction; when that fails
        (a jump already gone, a partial create), remove whatever is there one by one."""
        lines = [" ".join(argv[argv.index("filter") + 1 :]) for argv in self.delete_commands()]
        if run(
            self.restore_argv(), check=False, stdin="\n".join(["*filter", *lines, "COMMIT", ""])
        ).returncode:
            self.delete()

    def delete(self) -> bool:
        """Remove the jumps and the chain; False if there was nothing to remove."""
        if not self.exists():
            return False
        for argv in self.delete_commands()[: len(self.jumps)]:
            while run(argv, check=False).returncode == 0:  # a jump inserted twice goes too
                pass
        for argv in self.delete_commands()[len(self.jumps) :]:
            run(argv, check=False)
        return True


def _quote(arg: str) -> str:
    """An argument as iptables-restore reads it (double quotes around anything with a space)."""
    return f'"{arg}"' if not arg or " " in arg else arg
