"""The network layer: round trips, connects and retransmissions of the target's TCP sockets."""

from __future__ import annotations

import socket
import struct
from typing import ClassVar

from chaoslab.layers import Layer
from chaoslab.probes.base import Hook, Probe, Way
from chaoslab.probes.libbpf import BpfObject
from chaoslab.targets.base import RunningTarget
from chaoslab.targets.health import CHECK_PORT, CONTROL_MASK, CONTROL_PORT

RETRANSMIT = 4
FROM_TARGET = 5  # a turn sent by another target: that target's outbound, not counted twice
# The target's calls to its dependencies (its end of a connection it opened): inside its app time.
DEPENDENCY_METRICS = {6: "to dependencies", 7: "from dependencies", 8: "connect to dependencies"}


def addr_hash(addr: int) -> int:
    """The bit of an IPv4 address (network order, read as a little-endian u32) in `addr_bits`
    (bpf/tcpnet.bpf.c ADDR_HASH)."""
    return (addr ^ (addr >> 16)) & 0xFFFF


class NetworkProbe(Probe):
    layer = Layer.NETWORK
    program = "tcpnet"
    mechanism = (
        "one-way time per turn, from the sender's tcp_sendmsg_locked to its data ready at the receiver "
        "(CO-RE); sock:inet_sock_set_state (connect), tcp:tcp_retransmit_skb; sockets matched to targets "
        "by address"
    )
    hooks = (
        Hook(
            "send",
            (
                Way("send_raw_tp", "raw tracepoint tcp_sendmsg_locked"),
                Way("send_fentry", "fentry tcp_sendmsg_locked"),
                Way("send_kprobe", "kprobe tcp_sendmsg_locked"),
            ),
        ),
        Hook(
            "receive",
            (
                Way("receive_raw_tp", "raw tracepoint sk_data_ready"),
                Way("receive_fentry", "fentry sock_def_readable"),
                Way("receive_kprobe", "kprobe sock_def_readable"),
            ),
        ),
    )
    metrics: ClassVar[dict[int, str]] = {
        1: "inbound",
        2: "outbound",
        3: "connect",
        RETRANSMIT: "retransmit (count)",
        FROM_TARGET: "inbound from a target",
        **DEPENDENCY_METRICS,
    }

    @classmethod
    def applies_to(cls, target: RunningTarget) -> bool:
        return bool(target.links)

    def attach(self, obj: BpfObject, targets: list[RunningTarget]) -> None:
        obj.update_u32("control_block", 0, CONTROL_PORT)
        obj.update_u32("control_block", 1, CONTROL_MASK)
        obj.update_u32("control_block", 2, CHECK_PORT)
        for i, t in self.index.items():
            target = next(x for x in targets if x.name == t)
            for port in {*target.service.ports.values(), *target.service.control_ports}:
                obj.update_u32("listening", i << 16 | port, 1)
            if not target.netns:  # the host's namespace: its own ports, never the host's addresses
                for port in target.service.ports.values():
                    obj.update_u32("ports", port, i)
                    obj.set_bit("host_port_bits", port)
                continue
            for link in target.links.values():
                (addr,) = struct.unpack("<I", socket.inet_aton(link.local_ip))
                obj.update_u32("addrs", addr, i)
                obj.set_bit("addr_bits", addr_hash(addr))
            for port in target.service.control_ports:
                obj.set_bit("control_port_bits", port)
        obj.attach_all()

    def in_layer(self, metric: int) -> bool:
        return metric not in (RETRANSMIT, FROM_TARGET)
