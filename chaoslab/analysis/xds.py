"""The xds layer: how each config version travelled from a control plane to each Envoy.

An xds-control target logs every event as a JSON line (docker/xds-control): a version set
for a node (its snapshot), each response sent on a node's stream, and each ACK or NACK of
it. A version's sync time is from its snapshot to the last ACK of the types it changed,
the time until that Envoy runs the new config; a NACK, or a type never acknowledged,
leaves it unsynced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from chaoslab.report.model import FaultRecord, LayerRow, PhaseRecord, XdsAck, XdsVersion

MAX_LINES = 200_000  # a run's event log is read up to this many lines


def read_events(path: Path) -> list[dict[str, object]]:
    """The events of one control plane (what could be read: a killed one may end mid-line)."""
    return [e for e in read_json_lines(path, MAX_LINES) if isinstance(e.get("ns"), int)]


def read_json_lines(path: Path, limit: int) -> list[dict[str, object]]:
    """The JSON objects of a file a target appends to, one a line, up to `limit` lines; a line
    that is not one (cut short by a kill) is skipped, a missing file is empty."""
    out: list[dict[str, object]] = []
    try:
        with path.open() as fh:
            for i, line in enumerate(fh):
                if i >= limit:
                    break
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    out.append(row)
    except OSError:
        return []
    return out


def versions(
    control: str, events: Iterable[dict[str, object]], phases: Sequence[PhaseRecord]
) -> list[XdsVersion]:
    """Each version a control plane set for a node, with its responses' ACKs. A restarted
    control plane numbers its versions from 1 again: each life (a "start" event) is kept
    apart, its versions shown with the life's number after the first."""
    out: dict[tuple[int, str, str], XdsVersion] = {}
    snapshot_ns: dict[tuple[int, str, str], int] = {}
    served: dict[str, set[str]] = {}  # node -> what its last version served (HOST=IP:PORT)
    sent: dict[tuple[int, str, str, str], int] = {}  # (life, node, version, type) -> when sent
    life = 0
    for e in events:
        kind, node, version = e.get("event"), str(e.get("node", "")), str(e.get("version", ""))
        ns = int(e["ns"])  # type: ignore[call-overload]
        if kind == "start":
            life += 1
            continue
        key = (life, node, version)
        if kind == "version":
            changed = e.get("changed")
            snapshot_ns[key] = ns
            listed = e.get("endpoints")
            now = {str(x) for x in listed} if isinstance(listed, list) else set()
            before = served.get(node)
            served[node] = now
            why = str(e.get("why", ""))
            out[key] = XdsVersion(
                control=control,
                node=node,
                version=version if life <= 1 else f"{version} (life {life})",
                at=ns / 1e9,
                # a restore is the end of its phase's change, made as the next phase begins
                phase="" if why.startswith("restore") else _phase(ns / 1e9, phases),
                why=why,
                changed=[str(c) for c in changed] if isinstance(changed, list) else [],
                endpoints=sorted(now),
                added=_hosts(now - before) if before is not None else [],
                removed=_hosts(before - now) if before is not None else [],
            )
        elif kind == "sent" and key in out:
            sent.setdefault((*key, str(e.get("type", ""))), ns)
        elif kind in ("ack", "nack") and key in out:
            typ = str(e.get("type", ""))
            v = out[key]
            if any(a.type == typ for a in v.acks):
                continue  # the first answer counts (a reconnect answers again)
            base = snapshot_ns[key]
            v.acks.append(
                XdsAck(
                    type=typ,
                    sent_ms=round((sent.get((*key, typ), ns) - base) / 1e6, 3),
                    ack_ms=round((ns - base) / 1e6, 3) if kind == "ack" else None,
                    error=str(e.get("error", "")) if kind == "nack" else "",
                )
            )
    rows = sorted(out.values(), key=lambda v: (v.at, v.node))
    for v in rows:
        answered = {a.type: a for a in v.acks}
        if v.changed and all(t in answered and answered[t].ack_ms is not None for t in v.changed):
            v.sync_ms = max(answered[t].ack_ms or 0.0 for t in v.changed)
    # a version the next one replaced before it was sent (two within a round trip) never
    # reaches its Envoy, and need not: the later one, once synced, carries it
    for i, v in enumerate(rows):
        if v.sync_ms is None and not any(a.error for a in v.acks):
            later = [w for w in rows[i + 1 :] if (w.control, w.node) == (v.control, v.node)]
            if later and later[0].sync_ms is not None:
                v.superseded = True
    return rows


def _hosts(entries: set[str]) -> list[str]:
    return sorted({e.split("=", 1)[0] for e in entries})


def client_window(rows: Sequence[XdsVersion], logs: Mapping[str, Sequence[dict[str, object]]]) -> None:
    """From each Envoy's access log (by node): the requests a version's change had not yet
    reached. Requests that started after its snapshot and went to an endpoint it removed
    (`stale_*`), and the first request to an endpoint it added (`first_use_ms`)."""
    previous: dict[tuple[str, str], list[str]] = {}
    ordered = sorted(rows, key=lambda v: v.at)
    for i, v in enumerate(ordered):
        before = previous.get((v.control, v.node), [])
        previous[(v.control, v.node)] = v.endpoints
        log = logs.get(v.node)
        if not log or not (v.added or v.removed):
            continue
        # until the next version for the same Envoy, which has a window of its own
        nxt = next((w.at for w in ordered[i + 1 :] if (w.control, w.node) == (v.control, v.node)), None)
        gone = {e.split("=", 1)[1] for e in before if e.split("=", 1)[0] in v.removed}
        new = {e.split("=", 1)[1] for e in v.endpoints if e.split("=", 1)[0] in v.added}
        for r in log:
            try:
                start = float(r.get("start"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
            if start < v.at or (nxt is not None and start >= nxt):
                continue
            upstream = str(r.get("upstream", ""))
            after_ms = round((start - v.at) * 1000, 3)
            if upstream in gone:
                v.stale_requests += 1
                v.stale_errors += str(r.get("code", "")).startswith(("5", "0"))
                v.stale_until_ms = max(v.stale_until_ms or 0.0, after_ms)
            elif upstream in new and (v.first_use_ms is None or after_ms < v.first_use_ms):
                v.first_use_ms = after_ms


def _phase(at: float, phases: Sequence[PhaseRecord]) -> str:
    for p in phases:
        if p.start - p.settle_s <= at < p.end:
            return p.name
    return ""


def _touches(f: FaultRecord, control: str, node: str) -> bool:
    """The fault acts on the control plane, or on the link between it and this Envoy."""
    peer = str(f.params.get("peer", "") or "")
    if f.target == control:
        return f.kind != "network" or peer in ("", node)
    return f.target == node and f.kind == "network" and peer == control


def attribute(rows: Sequence[XdsVersion], phases: Sequence[PhaseRecord], layers: Sequence[LayerRow]) -> None:
    """Name what slowed a version's sync: a fault of its phase on the control plane or on its
    link to that Envoy, when the sync took longer than the versions no such fault touched
    (twice their median and 5 ms more), with what the probes measured there against the
    baseline's figure of the same layer."""
    if not phases:
        return
    by_name = {p.name: p for p in phases}
    baseline = phases[0].name

    def suspects(v: XdsVersion) -> list[FaultRecord]:
        p = by_name.get(v.phase)
        return [f for f in p.faults if _touches(f, v.control, v.node)] if p else []

    calm = sorted(v.sync_ms for v in rows if v.sync_ms is not None and v.phase and not suspects(v))
    typical = calm[len(calm) // 2] if calm else 0.0
    mean = {(r.phase, r.target, r.layer, r.metric): r.mean_ms for r in layers}
    for v in rows:
        found = suspects(v)
        unsynced = v.sync_ms is None and not v.superseded
        if not found or not (
            unsynced or (v.sync_ms is not None and v.sync_ms >= max(2 * typical, typical + 5))
        ):
            continue
        said = []
        for f in found:
            peer = str(f.params.get("peer", "") or "")
            where = f"{f.kind} fault on {f.target}" + (f"'s link to {peer}" if peer else "")
            # the layer's row, or the metric of it, that moved most from the baseline's
            moved = [
                (m - mean[(baseline, t, layer, metric)], metric or layer)
                for (phase, t, layer, metric), m in mean.items()
                if phase == v.phase
                and t == f.target
                and layer == f.layer
                and (baseline, t, layer, metric) in mean
            ]
            if moved:
                shift, what = max(moved)
                where += f" ({what} at {f.target} {shift:+.2f} ms per event against {baseline})"
            said.append(where)
        v.slowed_by = "; ".join(said)
        v.typical_ms = round(typical, 3)
