"""network: delay, jitter, loss, rate limit, blackhole and reset on a target's traffic.

Where the traffic is: the target's own links (its namespace's veth ends), all of them or
the one to `peer`, in one `direction`, optionally only the traffic of one local or remote
TCP port, and optionally only the packets that open TCP connections (`packets: syn`: SYN and
SYN-ACK, so a delay lands in the connect of new connections and kept ones are untouched, a
blackhole or reset refuses new connections only). Control traffic (health checks from the
reserved source-port block, admin ports) is always exempt.

Mechanisms, picked at preflight:
- the kernel has sch_netem: one netem qdisc does delay/jitter/loss/duplicate/reorder/
  corrupt/rate, in an htb class that only the fault's traffic is filtered into;
- it has not (this kind of machine): delay and jitter through an iptables NFQUEUE rule and
  chaoslab's nfqdelay, loss through the iptables statistic match, rate through tbf in the
  same htb class. duplicate, reorder, corrupt and the pareto distributions need netem.
Blackhole (DROP) and reset (REJECT with a TCP reset) are iptables rules either way.

Verification: TCP handshake round trips from the faulted side, sampled before apply and
again while the fault is active (delay, blackhole), the rules' own packet counters (loss,
blackhole, reset), TCP retransmissions in the namespaces involved, and the shaping leaf's
counters (rate: overlimits or drops, the limit bit).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from chaoslab import build
from chaoslab.errors import FaultError, PreflightError
from chaoslab.faults import rtt
from chaoslab.faults.base import Fault, Verification
from chaoslab.faults.helper import Helper
from chaoslab.faults.net.netfilter import Chain, Rule
from chaoslab.faults.net.tc import ShapingTree, netem_available
from chaoslab.layers import Layer
from chaoslab.quote import show
from chaoslab.scenario.fields import Fields, Problems, join
from chaoslab.scenario.model import FaultSpec, TargetSpec
from chaoslab.targets import netns
from chaoslab.targets.base import HOST, RunningTarget
from chaoslab.targets.health import CONTROL_LAST, CONTROL_MASK, CONTROL_PORT
from chaoslab.targets.netns import Link

MAX_DELAY = 10.0
DIRECTIONS = ("egress", "ingress")
DISTRIBUTIONS = ("uniform", "normal", "pareto", "paretonormal")
PACKETS = ("all", "syn")
# u32: the TCP flags byte (13 past the TCP header, after an IP header of 20 bytes: the same
# assumption as tc's own 'match ip sport'), its SYN bit
SYN_U32 = ("match", "u8", "0x02", "0x02", "at", "33")
NETEM_ONLY = ("duplicate", "reorder", "corrupt")
EFFECTS = ("delay", "loss", "rate", "blackhole", "reset", *NETEM_ONLY)
RTT_SAMPLES = 6
OBSERVED_FRACTION = 0.5  # the round trip must rise by at least this share of the delay


@dataclass(frozen=True)
class NetworkSpec(FaultSpec):
    direction: str = "egress"
    peer: str = ""  # a linked target, or "host"; empty: every link
    local_port: int = 0
    remote_port: int = 0
    packets: str = "all"  # or "syn": only the packets that open connections (SYN, SYN-ACK)
    delay: float = 0.0
    jitter: float = 0.0
    distribution: str = "uniform"
    loss: float = 0.0  # percent
    rate: int = 0  # bits per second
    blackhole: bool = False
    reset: bool = False
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0

    def effects(self) -> list[str]:
        return [e for e in EFFECTS if getattr(self, e)]


class NetworkFault(Fault):
    kind = "network"
    layer = Layer.NETWORK
    spec: NetworkSpec

    @classmethod
    def parse(cls, fields: Fields, kind: str, target: str) -> FaultSpec:
        def port(key: str) -> int:
            return fields.integer(key, 0, low=1, high=65535) if fields.has(key) else 0

        spec = NetworkSpec(
            kind=kind,
            target=target,
            path=fields.path,
            direction=fields.choice("direction", DIRECTIONS, "egress"),
            peer=fields.name("peer"),
            local_port=port("local_port"),
            remote_port=port("remote_port"),
            packets=fields.choice("packets", PACKETS, "all"),
            delay=fields.duration("delay", positive=False),
            jitter=fields.duration("jitter", positive=False),
            distribution=fields.choice("distribution", DISTRIBUTIONS, "uniform"),
            loss=fields.percent("loss"),
            rate=fields.bitrate("rate"),
            blackhole=fields.flag("blackhole"),
            reset=fields.flag("reset"),
            duplicate=fields.percent("duplicate"),
            reorder=fields.percent("reorder"),
            corrupt=fields.percent("corrupt"),
        )
        p = fields.problems
        for key in ("delay", "jitter"):
            if getattr(spec, key) > MAX_DELAY:
                p.add(fields.at(key), f"at most {MAX_DELAY:g}s, got {getattr(spec, key):g}s")
        effects = spec.effects()
        if fields.ok and not effects:
            p.add(fields.path, "a network fault needs an effect", f"add one of: {', '.join(EFFECTS)}")
        for only in ("blackhole", "reset"):
            if getattr(spec, only) and len(effects) > 1:
                p.add(
                    fields.at(only), f"{only} acts on every packet: give it alone", "remove the other effects"
                )
        if spec.jitter and not spec.delay:
            p.add(fields.at("jitter"), "jitter varies a delay", "add 'delay:'")
        if spec.reorder and not spec.delay:
            p.add(fields.at("reorder"), "reordering sends some packets ahead of delayed ones", "add 'delay:'")
        if spec.packets == "syn" and (spec.rate or any(getattr(spec, k) for k in NETEM_ONLY)):
            p.add(
                fields.at("packets"),
                "a connection's opening packets are too few to shape, duplicate, reorder or corrupt",
                "use packets: syn with delay, jitter, loss, blackhole or reset",
            )
        if fields.has("distribution") and not spec.jitter:
            p.add(fields.at("distribution"), "a distribution shapes the jitter", "add 'jitter:'")
        return spec

    @classmethod
    def claims(cls, spec: FaultSpec) -> tuple[str, ...]:
        assert isinstance(spec, NetworkSpec)
        return (f"{spec.direction} traffic" + (f" to {spec.peer}" if spec.peer else ""),)

    @classmethod
    def check(cls, spec: FaultSpec, targets: Mapping[str, TargetSpec], problems: Problems) -> None:
        assert isinstance(spec, NetworkSpec)
        me = targets[spec.target]
        linked = {n for n, t in targets.items() if me.name in t.links or n in me.links}
        if spec.peer and spec.peer != HOST and spec.peer not in linked:
            problems.add(
                join(spec.path, "peer"),
                f"{spec.target} has no link to {show(spec.peer)}",
                f"its peers are: {', '.join(sorted({HOST, *linked}))}",
            )
        if spec.local_port and spec.local_port in me.control_ports:
            problems.add(join(spec.path, "local_port"), f"{spec.local_port} is a control port: never faulted")
        elif spec.local_port and spec.local_port not in me.port_map.values():
            problems.add(
                join(spec.path, "local_port"),
                f"{spec.target} ({me.what}) does not listen on {spec.local_port}",
                "its ports are " + (", ".join(f"{p} ({n})" for n, p in me.ports) or "none"),
            )
        if spec.remote_port:
            peers = [spec.peer] if spec.peer and spec.peer != HOST else sorted(linked)
            ports = {p for n in peers for p in targets[n].port_map.values()}
            if spec.remote_port not in ports:
                problems.add(
                    join(spec.path, "remote_port"),
                    f"no peer of {spec.target} listens on {spec.remote_port}",
                    "peer ports: "
                    + (", ".join(map(str, sorted(ports))) or "none (the host has no fixed port)"),
                )

    def __init__(self, spec: FaultSpec, target: RunningTarget) -> None:
        super().__init__(spec, target)
        self.netem = False
        self.delayer: Helper | None = None
        self.before: rtt.RttSample | None = None
        self.retrans_before: dict[str | None, int] = {}
        self.result: Verification | None = None

    def locks(self) -> dict[str, str]:
        inode = os.stat(f"/proc/{self.target.pid}/ns/net").st_ino
        where = f"network namespace {self.target.netns or 'of the host'}"
        return super().locks() | {f"netns:{inode}": f"the {where} of {self.target.name}"}

    # -- what the fault is made of ------------------------------------------------------

    @property
    def _index(self) -> tuple[int, int]:
        nums = [int(n) for n in re.findall(r"\d+", self.spec.path)] + [0, 0]
        return nums[0], nums[1]

    def unmeasurable(self) -> dict[tuple[Layer, str], str]:
        t = self.target
        if not (t.remote and HOST in self.links):
            return {}
        return {
            (Layer.NETWORK, t.name): (
                f"the network layer times each turn from its sender to its receiver on one kernel, and the "
                f"load's side of {t.name}, on the remote {t.remote}, is on another host (its connections "
                "reach a published port): the delay there shows in the client's figures alone"
            )
        }

    @property
    def links(self) -> dict[str, Link]:
        links = self.target.links
        if self.spec.peer:
            return {self.spec.peer: links[self.spec.peer]} if self.spec.peer in links else {}
        return dict(links)

    def takes_target_away(self) -> bool:
        """A blackhole or a reset answers nothing: its traffic has no turns to time, and what the
        phase's requests met is their errors."""
        s = self.spec
        return bool(s.blackhole or s.reset)

    def also_shows_in(self, targets: Mapping[str, TargetSpec]) -> tuple[tuple[Layer, str], ...]:
        """A link has two ends: the far end's network time on the faulted traffic (its connects,
        its calls to this target, the answers it waits for) is this fault's effect as much as this
        end's. The far ends: the peer; else, with a local port, the targets that call this one
        (they connect to its port); with a remote port, those that listen on it; else every
        linked target."""
        me = self.spec.target
        if self.spec.peer:
            far = {self.spec.peer} - {HOST}
        else:
            far = {n for n, t in targets.items() if me in t.links or n in targets[me].links}
            if self.spec.local_port:
                far = {n for n in far if me in targets[n].links}
            if self.spec.remote_port:
                far = {n for n in far if self.spec.remote_port in targets[n].port_map.values()}
        return tuple((Layer.NETWORK, n) for n in sorted(far))

    @property
    def _uses_nfqueue(self) -> bool:
        return bool(self.spec.delay) and not self.netem

    @property
    def queue(self) -> int:
        phase, fault = self._index
        return 1000 + 100 * phase + fault

    def _ports(self) -> list[tuple[str, int]]:
        """(side, port) pairs of the fault's match; side is 'sport' or 'dport' of the packet."""
        egress = self.spec.direction == "egress"
        out = []
        # A target in the host's own namespace (an attached process) shares its links with
        # everything else there: the fault acts on its own port only, never on the host.
        local = self.spec.local_port or (0 if self.target.netns else self.target.service.port())
        if local:
            out.append(("sport" if egress else "dport", local))
        if self.spec.remote_port:
            out.append(("dport" if egress else "sport", self.spec.remote_port))
        return out

    def _control_ports(self) -> list[tuple[str, int, int]]:
        """(side, port, mask) of control traffic: the reserved block both ways, admin ports."""
        side = "sport" if self.spec.direction == "egress" else "dport"
        out = [("sport", CONTROL_PORT, CONTROL_MASK), ("dport", CONTROL_PORT, CONTROL_MASK)]
        return out + [(side, p, 0xFFFF) for p in self.target.service.control_ports]

    def chain(self) -> Chain:
        phase, fault = self._index
        hook = "OUTPUT" if self.spec.direction == "egress" else "INPUT"
        jumps = tuple(
            j
            for link in self.links.values()
            for j in (
                (link.local_if, link.peer_ip),
                *(((link.local_if, f"!{link.beyond}"),) if link.beyond else ()),
            )
        )
        return Chain(self.target.netns, f"CHAOSLAB-{phase}-{fault}", hook, jumps)

    def rules(self) -> list[Rule]:
        s = self.spec
        rules = []
        for side, port, mask in self._control_ports():
            last = CONTROL_LAST if mask != 0xFFFF else port
            ports = f"{port}:{last}" if last != port else str(port)
            rules.append(Rule("control", ("-p", "tcp", f"--{side}", ports, "-j", "RETURN")))
        match: tuple[str, ...] = ()
        if self._ports() or s.packets == "syn":
            match = ("-p", "tcp", *(a for side, port in self._ports() for a in (f"--{side}", str(port))))
            if s.packets == "syn":
                match += ("--tcp-flags", "SYN", "SYN")
        rules.append(Rule("seen", match))
        if s.loss and not self.netem:
            rules.append(
                Rule(
                    "loss",
                    (
                        *match,
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        f"{s.loss / 100:.6f}",
                        "-j",
                        "DROP",
                    ),
                )
            )
        if s.blackhole:
            rules.append(Rule("blackhole", (*match, "-j", "DROP")))
        if s.reset:
            tcp = match if match else ("-p", "tcp")
            rules.append(Rule("reset", (*tcp, "-j", "REJECT", "--reject-with", "tcp-reset")))
        if self._uses_nfqueue:
            rules.append(
                Rule("delay", (*match, "-j", "NFQUEUE", "--queue-num", str(self.queue), "--queue-bypass"))
            )
        return rules

    def _leaf(self) -> tuple[str, ...]:
        s = self.spec
        if not self.netem:
            if not s.rate:
                return ()
            burst = max(3200, s.rate // 8 // 100)  # 10 ms of traffic, at least two full frames
            return ("tbf", "rate", f"{s.rate}bit", "burst", str(burst), "latency", "200ms")
        leaf: list[str] = []
        if s.delay:
            leaf += ["delay", f"{round(s.delay * 1e6)}us"]
            if s.jitter:
                leaf += [f"{round(s.jitter * 1e6)}us"]
                if s.distribution != "uniform":
                    leaf += ["distribution", s.distribution]
        for key in ("loss", "duplicate", "reorder", "corrupt"):
            if getattr(s, key):
                leaf += [key, f"{getattr(s, key):g}%"]
        if s.rate:
            leaf += ["rate", f"{s.rate}bit"]
        return ("netem", "limit", "100000", *leaf) if leaf else ()

    def trees(self) -> list[ShapingTree]:
        leaf = self._leaf()
        if not leaf:
            return []
        control = tuple(
            ("match", "ip", side, str(port), hex(mask)) for side, port, mask in self._control_ports()
        )
        ports = self._ports()
        syn = self.spec.packets == "syn"
        match = (("match", "ip", "protocol", "6", "0xff") if ports or syn else ()) + tuple(
            a for side, port in ports for a in ("match", "ip", side, str(port), "0xffff")
        )
        if syn:
            match += SYN_U32
        # One tree per interface: a container's links share its eth0. The packets leave
        # through it towards the peer's address (egress) or the target's (ingress, shaped on
        # the peer's side).
        devices: dict[tuple[str | None, str], list[tuple[str, ...]]] = {}
        beyond: dict[tuple[str | None, str], tuple[tuple[str, ...], tuple[str, ...]]] = {}
        for link in self.links.values():
            where: tuple[str | None, str]
            if self.spec.direction == "egress":
                where, dst = (self.target.netns, link.local_if), link.peer_ip
            else:
                if not link.peer_if:
                    raise PreflightError(
                        f"{self.spec.path}: ingress shaping of {self.target.name} needs the far end of its "
                        "link, which chaoslab does not know for an attached target",
                        "use direction: egress, or an effect done by iptables (loss, blackhole, reset, "
                        "delay without netem)",
                    )
                where, dst = (link.peer_netns, link.peer_if), link.local_ip
            to = ("match", "ip", "dst", f"{dst}/32") if dst else ()
            devices.setdefault(where, []).append((*to, *match))
            if link.beyond and self.spec.direction == "egress":
                # and everything off the run's network: after the peers' own matches, the
                # network's other addresses go unshaped, and the rest is the fault's
                beyond[where] = (("match", "ip", "dst", link.beyond), match or ("match", "u32", "0", "0"))
        return [
            ShapingTree(ns, dev, leaf, control, tuple(m), *beyond.get((ns, dev), ((), ())))
            for (ns, dev), m in devices.items()
        ]

    def delayer_argv(self) -> list[str]:
        s = self.spec
        dist = "normal" if s.distribution == "normal" else "uniform"
        return [
            *netns.enter_argv(self.target.netns),
            str(build.native("nfqdelay")),
            "--queue",
            str(self.queue),
            "--delay-us",
            str(round(s.delay * 1e6)),
            "--jitter-us",
            str(round(s.jitter * 1e6)),
            "--dist",
            dist,
        ]

    def mechanism(self) -> str:
        s = self.spec
        parts = []
        if self.netem and self._leaf():
            parts.append("tc netem in an htb class")
        if self._uses_nfqueue:
            parts.append("iptables NFQUEUE + nfqdelay (delay)")
        if s.loss and not self.netem:
            parts.append("iptables statistic match (loss)")
        if s.rate and not self.netem:
            parts.append("tbf in an htb class (rate)")
        if s.blackhole:
            parts.append("iptables DROP (blackhole)")
        if s.reset:
            parts.append("iptables REJECT tcp-reset (reset)")
        where = ", ".join(
            f"{link.local_if} (to {peer} {link.peer_ip}"
            + (f" and every address off {link.beyond}" if link.beyond else "")
            + ")"
            for peer, link in self.links.items()
        )
        only = " (SYN packets only)" if s.packets == "syn" else ""
        return f"{'; '.join(parts)}; {s.direction}{only} on {where}"

    # -- life cycle ------------------------------------------------------------------------

    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise PreflightError("network faults need root (iptables, tc)", "run chaoslab with sudo")
        for tool, pkg in (("iptables", "iptables"), ("tc", "iproute2"), ("nsenter", "util-linux")):
            if shutil.which(tool) is None:
                raise PreflightError(f"network faults need {tool}", f"apt-get install {pkg}")
        self.netem = netem_available()
        s = self.spec
        if not self.netem:
            missing = [k for k in NETEM_ONLY if getattr(s, k)]
            if s.jitter and s.distribution.startswith("pareto"):
                missing.append(f"distribution {s.distribution}")
            if missing:
                raise PreflightError(
                    f"{s.path}: {', '.join(missing)} needs sch_netem, which this kernel does not have "
                    "(CONFIG_NET_SCH_NETEM unset)",
                    "run on a kernel with sch_netem (most distro kernels), or drop it: delay, jitter "
                    "(uniform, normal), loss, rate, blackhole and reset work without netem",
                )
            if s.delay:
                build.native("nfqdelay")
        if not self.links:
            raise PreflightError(f"{s.path}: {self.target.name} has no link to {s.peer!r}")

    def plan(self) -> list[str]:
        lines = [f"mechanism: {self.mechanism()}"]
        if self._uses_nfqueue:
            lines.append(" ".join(self.delayer_argv()))
        chain = self.chain()
        lines.append(" ".join(chain.restore_argv()) + " <<")
        lines += [f"  {line}" for line in chain.restore_input(self.rules()).splitlines()]
        for tree in self.trees():
            argv, text = tree.batch()
            lines.append(" ".join(argv) + " <<")
            lines += [f"  {line}" for line in text.splitlines()]
        lines.append("revert:")
        lines += [" ".join(a) for a in self.chain().delete_commands()]
        lines += [" ".join(t.delete_command()) for t in self.trees()]
        return lines

    def journal_record(self) -> dict[str, object]:
        chain = self.chain()
        return {
            "netns": chain.netns,
            "chain": chain.name,
            "hook": chain.hook,
            "jumps": [list(j) for j in chain.jumps],
            "trees": [{"netns": t.netns, "dev": t.dev} for t in self.trees()],
        }

    def vantage(self) -> rtt.Vantage | None:
        """Where a TCP handshake crosses the faulted traffic."""
        links = self.links
        if self.spec.remote_port:  # the target's own connections out to a peer's port
            for peer, link in links.items():
                if peer != HOST:
                    return rtt.Vantage(self.target.netns, link.peer_ip, self.spec.remote_port)
            return None
        link = links.get(HOST) or next(iter(links.values()))
        return rtt.Vantage(link.peer_netns, link.local_ip, self.spec.local_port or self.target.port)

    def _namespaces(self) -> list[str | None]:
        return [self.target.netns, *{link.peer_netns for link in self.links.values()}]

    def apply(self, note: Callable[..., None]) -> None:
        v = self.vantage()
        if v is not None and (self.spec.delay or self.spec.blackhole):
            self.before = rtt.sample(v, RTT_SAMPLES)
        self.retrans_before = {ns: _retransmissions(ns) for ns in self._namespaces()}
        if self._uses_nfqueue:  # bound before the rule sends it anything
            self.delayer = Helper("nfqdelay", self.delayer_argv())
            self.delayer.start(note, f"on {self.target.name}")
        self.chain().create(self.rules())
        for tree in self.trees():
            tree.create()

    def verify(self) -> Verification:
        s = self.spec
        measured: dict[str, float] = {}
        seen: list[str] = []
        missing: list[str] = []
        counters = self.chain().counters()
        measured["packets_matched"] = counters.get("seen", 0)
        v = self.vantage()
        if v is not None and (s.delay or s.blackhole):
            timeout = 0.5 if s.blackhole else min(3.0, 1.0 + 3 * (s.delay + s.jitter))
            during = rtt.sample(v, 3 if s.blackhole else RTT_SAMPLES, timeout=timeout)
            before = self.before.median if self.before else None
            if before is not None:
                measured["rtt_before_ms"] = round(before * 1000, 3)
            if during.median is not None:
                measured["rtt_during_ms"] = round(during.median * 1000, 3)
            measured["rtt_timeouts"] = during.failed
            if s.delay:
                added = (during.median or 0.0) - (before or 0.0)
                measured["rtt_added_ms"] = round(added * 1000, 3)
                was = self.before.text() if self.before else "?"
                text = f"handshake RTT {v.describe()}: {was} -> {during.text()}"
                (
                    seen if during.median is not None and added >= OBSERVED_FRACTION * s.delay else missing
                ).append(text)
            if s.blackhole:
                (seen if not during.rtts else missing).append(f"handshakes {v.describe()}: {during.text()}")
        if self.delayer is not None:
            released, held_us = self.delayer.latest("released"), self.delayer.latest("held_us_sum")
            measured["delayed_packets"] = released
            if released:
                measured["mean_hold_ms"] = round(held_us / released / 1000, 3)
            if v is None:  # no handshake crosses this traffic: the delayer's own account is the evidence
                held = released and held_us / released / 1e6 >= OBSERVED_FRACTION * s.delay
                (seen if held else missing).append(f"nfqdelay held {released} packets")
        for label in ("loss", "blackhole", "reset"):
            if label in counters:
                measured[f"{label}_packets"] = counters[label]
                text = f"{label}: {counters[label]} of {counters.get('seen', 0)} packets"
                (seen if counters[label] else missing).append(text)
        stats = _sum_stats([t.leaf_stats() for t in self.trees()])
        if stats:
            measured.update({f"leaf_{k}": float(v) for k, v in stats.items()})
            if s.rate:
                bit = stats.get("overlimits", 0) + stats.get("drops", 0)
                text = (
                    f"rate {s.rate}bit: {stats.get('packets', 0)} packets shaped, {bit} held back or dropped"
                )
                (seen if bit else missing).append(text)
            if self.netem and s.loss:
                text = f"netem dropped {stats.get('drops', 0)} of {stats.get('packets', 0)} packets"
                (seen if stats.get("drops") else missing).append(text)
            if self.netem and any(getattr(s, k) for k in NETEM_ONLY):
                (seen if stats.get("packets") else missing).append(
                    f"netem handled {stats.get('packets', 0)} packets"
                )
        retrans = sum(_retransmissions(ns) - self.retrans_before.get(ns, 0) for ns in self._namespaces())
        measured["tcp_retransmissions"] = retrans
        if s.loss:
            seen.append(f"{retrans} TCP retransmissions")
        detail = "; ".join(seen + [f"NOT SEEN: {m}" for m in missing])
        self.result = Verification(not missing, detail, self.mechanism(), measured)
        return self.result

    def revert(self) -> None:
        chain, trees = self.chain(), self.trees()
        chain.remove()  # first, so nothing more is queued to the delayer
        if self.delayer is not None:
            self.delayer.stop()
        for tree in trees:
            tree.remove()
        left = ([chain.name] if chain.exists() else []) + [f"tc on {t.dev}" for t in trees if t.ours()]
        if left:
            raise FaultError(f"network revert failed on {self.target.name}: {', '.join(left)} still in place")
        self._check_reverted()

    def _check_reverted(self) -> None:
        """The revert is seen on the wire too: handshakes are back to their round trip before."""
        v = self.vantage()
        if v is None or self.result is None or self.before is None or not self.target.alive():
            return
        if not (self.spec.delay or self.spec.blackhole):
            return
        after = rtt.sample(v, 3, timeout=1.0)
        if after.median is not None:
            self.result.measured["rtt_after_revert_ms"] = round(after.median * 1000, 3)
        was = self.before.median or 0.0
        if after.median is None or after.median > was + max(0.005, OBSERVED_FRACTION * self.spec.delay):
            raise FaultError(
                f"network fault on {self.target.name} still acting after revert: "
                f"handshakes {v.describe()} {after.text()} (before the fault: {self.before.text()})"
            )

    @classmethod
    def recover(cls, record: Mapping[str, object]) -> list[str]:
        """The rules first (traffic flows again at once), then the shaping, then the delayer."""
        done = []
        ns, name, hook, jumps = (
            record.get("netns"),
            record.get("chain"),
            record.get("hook"),
            record.get("jumps"),
        )
        if (
            isinstance(ns, str)
            and isinstance(name, str)
            and isinstance(hook, str)
            and isinstance(jumps, list)
            and Chain(ns, name, hook, tuple((str(j[0]), str(j[1])) for j in jumps)).delete()
        ):
            done.append(f"removed iptables chain {name} in {ns}")
        trees = record.get("trees")
        for t in trees if isinstance(trees, list) else []:
            if isinstance(t, dict):
                tns = t.get("netns")
                tree = ShapingTree(tns if isinstance(tns, str) else None, str(t.get("dev")), (), (), ())
                if tree.delete():
                    done.append(f"removed tc shaping on {tree.dev}")
        return done + Helper.recover("nfqdelay", record)


def _retransmissions(ns: str | None) -> int:
    """TCP RetransSegs of a namespace (the host's when None)."""
    if ns is not None and not netns.exists(ns):
        return 0
    try:
        text = netns.call_in(ns, lambda: Path("/proc/thread-self/net/snmp").read_text())
    except OSError:
        return 0
    lines = [line.split() for line in text.splitlines() if line.startswith("Tcp:")]
    if len(lines) < 2 or "RetransSegs" not in lines[0]:
        return 0
    return int(lines[1][lines[0].index("RetransSegs")])


def _sum_stats(stats: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for st in stats:
        for k, v in st.items():
            out[k] = out.get(k, 0) + v
    return out
