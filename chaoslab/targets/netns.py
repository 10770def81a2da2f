"""Network namespaces and veth links for the local runtime (iproute2).

Topology, with no bridge and no host forwarding (so host firewalls, Docker's FORWARD
policy and br_netfilter never see the run's traffic):
- each target's namespace has a veth `eth0` to the host (host side `clh<run><i>`),
  a /30 from 10.231.<net>.0/24; the host reaches the target there;
- each upstream relation gets its own veth pair between the two namespaces, a /30
  from 10.232.<net>.0/24.
Deleting a namespace deletes the veth ends inside it and with them their peers.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from chaoslab.errors import PreflightError
from chaoslab.proc import run

NETNS_DIR = Path("/run/netns")
HOST_NET = "10.231"
PEER_NET = "10.232"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def preflight() -> None:
    if shutil.which("ip") is None or shutil.which("nsenter") is None:
        raise PreflightError(
            "iproute2 and util-linux (ip, nsenter) are needed", "apt-get install iproute2 util-linux"
        )


def free_subnet_index() -> int:
    """An index N such that neither 10.231.N.0/24 nor 10.232.N.0/24 is in use here."""
    used = run(["ip", "-o", "-4", "addr", "show"]).stdout
    for n in range(1, 255):
        if f" {HOST_NET}.{n}." not in used and f" {PEER_NET}.{n}." not in used:
            return n
    raise PreflightError("no free 10.231.N.0/24 subnet left", "run `chaoslab recover` to remove stale runs")


@dataclass(frozen=True)
class Link:
    """One end of a veth pair, seen from the namespace it is in."""

    local_if: str
    local_ip: str
    peer_ip: str
    peer_if: str = ""
    peer_netns: str | None = None  # None: the other end is in the host's namespace
    # The peer's side also holds every address off this network (NET/LEN): a remote engine's
    # host, reached through its published ports from wherever the load runs, the source kept.
    beyond: str = ""


def pair_ips(prefix: str, net: int, index: int) -> tuple[str, str]:
    base = ipaddress.IPv4Address(f"{prefix}.{net}.0") + 4 * index
    return str(base + 1), str(base + 2)


def create(ns: str) -> None:
    run(["ip", "netns", "add", ns])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])


def delete(ns: str) -> bool:
    if not ns or not (NETNS_DIR / ns).exists():
        return False
    run(["ip", "netns", "del", ns], check=False)
    return True


def exists(ns: str) -> bool:
    """Whether a named namespace exists ("" is the host's own, which always does)."""
    return not ns or (NETNS_DIR / ns).exists()


def host_link(ns: str, host_if: str, net: int, index: int) -> Link:
    """veth host<->ns, as seen from the namespace (`local_ip`); `create_host_link` makes it."""
    host_ip, ns_ip = pair_ips(HOST_NET, net, index)
    return Link("eth0", ns_ip, host_ip, host_if, None)


def create_host_link(ns: str, link: Link) -> None:
    tmp = f"{link.peer_if}n"
    run(["ip", "link", "add", link.peer_if, "type", "veth", "peer", "name", tmp])
    run(["ip", "link", "set", tmp, "netns", ns])
    run(["ip", "-n", ns, "link", "set", tmp, "name", link.local_if])
    run(["ip", "addr", "add", f"{link.peer_ip}/30", "dev", link.peer_if])
    run(["ip", "-n", ns, "addr", "add", f"{link.local_ip}/30", "dev", link.local_if])
    run(["ip", "link", "set", link.peer_if, "up"])
    run(["ip", "-n", ns, "link", "set", link.local_if, "up"])


def peer_link(ns_a: str, ns_b: str, name: str, net: int, index: int) -> tuple[Link, Link]:
    """veth between two namespaces: (side in a, side in b); `create_peer_link` makes it."""
    ip_a, ip_b = pair_ips(PEER_NET, net, index)
    a_if, b_if = f"{name}a", f"{name}b"
    return Link(a_if, ip_a, ip_b, b_if, ns_b), Link(b_if, ip_b, ip_a, a_if, ns_a)


def create_peer_link(ns_a: str, a: Link) -> None:
    ns_b, b_if = a.peer_netns, a.peer_if
    assert ns_b is not None
    run(["ip", "link", "add", a.local_if, "netns", ns_a, "type", "veth", "peer", "name", b_if, "netns", ns_b])
    run(["ip", "-n", ns_a, "addr", "add", f"{a.local_ip}/30", "dev", a.local_if])
    run(["ip", "-n", ns_b, "addr", "add", f"{a.peer_ip}/30", "dev", b_if])
    run(["ip", "-n", ns_a, "link", "set", a.local_if, "up"])
    run(["ip", "-n", ns_b, "link", "set", b_if, "up"])


def enter_argv(ns: str) -> list[str]:
    """Prefix that runs a command inside the namespace (same mount namespace, unlike `ip netns
    exec`); none for "" (the host's own namespace)."""
    return ["nsenter", f"--net={NETNS_DIR / ns}", "--"] if ns else []


def _enter(ns: str) -> None:
    fd = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def call_in(ns: str | None, fn: Callable[[], T], timeout: float = 60.0) -> T:
    """`fn()` inside network namespace `ns` (None: here), without a child process: in a
    thread of its own, since entering a namespace changes the calling thread only. Files
    of the namespace are under /proc/thread-self/net."""
    if not ns:  # None or "": the host's own namespace
        return fn()
    out: list[T] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            _enter(ns)
            out.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    t = threading.Thread(target=work, name=f"netns {ns}", daemon=True)
    t.start()
    t.join(timeout)
    if errors:
        raise errors[0]
    if not out:
        raise TimeoutError(f"no answer from namespace {ns} in {timeout:g}s")
    return out[0]
