"""The report as data: built by the analysis, rendered to the terminal, saved as JSON.

Schema `chaoslab.report/2` (documented in reports/README.md; the reader also loads version 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum

from chaoslab.scenario.model import Status

SCHEMA = "chaoslab.report/2"
SCHEMA_V1 = "chaoslab.report/1"  # before verdicts had causes
# a verdict says what lay outside its phase's window from this share of the client's added mean,
# and this many ms
CARRIED_WORTH_SAYING = 0.1
CARRIED_FLOOR_MS = 2.0


@dataclass(frozen=True)
class FaultRecord:
    kind: str
    target: str
    params: dict[str, object]
    mechanism: str
    observed: bool
    detail: str
    measured: dict[str, float] = field(default_factory=dict)
    layer: str = ""  # the layer the fault declares its effect must show in


@dataclass
class ChangeRecord:
    """A config change made during a phase, and the version each Envoy was given for it."""

    at: float  # seconds into the phase
    target: str  # the control plane
    what: str
    versions: dict[str, str] = field(default_factory=dict)  # Envoy -> version
    error: str = ""  # the control plane did not take it


@dataclass(frozen=True)
class PhaseRecord:
    name: str
    start: float  # epoch seconds: when its measurement began (faults in place, earlier ones reverted)
    end: float
    faults: list[FaultRecord]
    # seconds from its scheduled start to `start`: applying its faults or reverting the
    # previous phase's (requests due then belong to no phase)
    settle_s: float = 0.0
    aborted: bool = False  # cut short by a stop condition or the dead man's switch (see Report.abort)
    changes: list[ChangeRecord] = field(default_factory=list)
    # GOMAXPROCS of each Go target near the phase's end, its faults still on (chaoslab.goruntime)
    gomaxprocs: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerRow:
    phase: str
    target: str
    layer: str
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    per_request_ms: float  # layer time in the phase / client requests in the phase
    metric: str = ""  # "" for the layer as a whole, else one of its metrics (a syscall, connect...)


@dataclass(frozen=True)
class ClientRow:
    """The client's view of a phase: every request, or one request name of the mix."""

    phase: str
    requests: int
    errors: int
    rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    late: int  # requests sent more than 10 ms after their due time
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    p999_ms: float = 0.0
    name: str = ""  # "" for all requests, else a request name of the load's mix
    protocol: str = ""
    generator_late: int = 0  # late requests whose user was idle: the generator's own delay
    # The two parts of each request's time: due -> sent (the generator's lateness, over requests
    # whose user was waiting for its due time) and sent -> answered (what the target and the
    # network took, as the client saw it)
    sent_p50_ms: float = 0.0
    sent_p99_ms: float = 0.0
    answer_p50_ms: float = 0.0
    answer_p99_ms: float = 0.0
    # HTTP's client split: per part of a request's time (records.PARTS: late, connect, tls, send,
    # wait, receive), its mean over the answered requests the client timed in parts (the means
    # add up to their mean latency), and its p50 and p99
    split_requests: int = 0
    split_ms: dict[str, float] = field(default_factory=dict)
    split_p50_ms: dict[str, float] = field(default_factory=dict)
    split_p99_ms: dict[str, float] = field(default_factory=dict)

    def split_change(self, base: ClientRow) -> tuple[float, str, float] | None:
        """This row's client split against the baseline's: (added ms per request, the part that
        took most of it, that part's share of it); None without a split on both sides."""
        if not (base.split_ms and self.split_ms):
            return None
        added = {k: self.split_ms[k] - base.split_ms.get(k, 0.0) for k in self.split_ms}
        total = sum(added.values())
        sign = 1.0 if total >= 0 else -1.0
        part = max(added, key=lambda k: sign * added[k])
        # its share of what moved the same way as the total (parts that moved against it apart)
        moved = sum(sign * v for v in added.values() if sign * v > 0)
        return total, part, (sign * added[part] / moved if moved else 0.0)


@dataclass(frozen=True)
class SecondRow:
    """One second of the run (by due time, from t0)."""

    second: int
    phase: str
    requests: int
    errors: int
    late: int
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class WorkerRow:
    """One Locust worker's part of the load: a local one, or one that joined from another host."""

    index: int  # its place in the schedule: worker i of n sends arrivals i, i+n, ...
    host: str  # "local", or the host name a remote worker gave
    remote: bool
    requests: int
    late: int  # of those, sent late by a free user: this worker could not keep to its schedule
    rate: float  # its requests per second over the run
    share: float  # of all the run's requests
    offset_ms: float = 0.0  # its clock less the run's, measured as it joined (remote only)
    rtt_ms: float = 0.0  # the round trip of that measurement: the offset is right to half of it
    dropped_at: float | None = None  # its requests stopped this many seconds into the load
    lost: int = 0  # arrivals of its part of the schedule it never sent (open model)


@dataclass(frozen=True)
class GeneratorRecord:
    """The load generator itself: if it was saturated, every latency figure is wrong."""

    model: str
    workers: int
    cpu_by_phase: dict[str, float]  # the busiest Locust process, in cores
    saturated: bool
    reasons: list[str]
    # each worker's part (a run with workers on other hosts, or more than one here)
    per_worker: list[WorkerRow] = field(default_factory=list)
    # the busiest Locust process's threads: time runnable but waiting for a CPU, in cores (absent
    # where the kernel has no schedstat)
    wait_by_phase: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Contribution:
    layer: str
    target: str
    added_ms: float  # per client request
    added_p50_ms: float  # shift of the layer's own median
    added_p99_ms: float
    explained: float  # added_ms / client added mean
    p_value: float = 1.0  # the layer's events, baseline against phase: rank, tail and mean tests
    significant: bool = False


class CauseKind(StrEnum):
    """Where a cause comes from."""

    FAULT = "fault"  # a fault of the phase declared it (its layer and target, or a layer its effect reaches)
    SIDE_EFFECT = "side-effect"  # no fault of the phase declared it: a consequence of them, or of the machine
    OUTSIDE = "outside"  # a phase without faults (a control) changed: something outside the run


@dataclass(frozen=True)
class FaultRef:
    """A declared fault, as a cause names it: its kind and the layer and target it declares."""

    kind: str
    layer: str
    target: str

    def describe(self) -> str:
        return f"{self.kind} fault on {self.target}"


@dataclass(frozen=True)
class Cause:
    """One part of a phase's added time: a layer at a target that holds no other cause's time."""

    layer: str
    target: str
    added_ms: float  # per client request (less the time of other causes inside it, if any)
    share: float  # added_ms / client added mean
    kind: CauseKind
    faults: list[FaultRef] = field(default_factory=list)  # the declared faults it matches

    @property
    def name(self) -> str:
        return f"{self.layer} at {self.target}"

    def origin(self) -> str:
        """`entropy fault on api`, `side effect`, `outside change`."""
        if self.faults:
            return ", ".join(f.describe() for f in self.faults)
        return "side effect" if self.kind is CauseKind.SIDE_EFFECT else "outside change"


@dataclass(frozen=True)
class Verdict:
    phase: str
    status: Status
    layer: str | None  # the main cause's layer (the only one, for a phase with one cause)
    target: str | None
    added_ms: float  # the main cause's layer's added time per client request
    explained: float  # 0..1: the causes' shares together, of the client's added time in the phase
    client_added_p50_ms: float
    client_added_mean_ms: float
    unexplained_ms: float  # the client's added time in the phase less the causes' added times
    p_value: float
    reason: str
    contributions: list[Contribution]
    # Every cause, the main one first: the layers, with their targets, that hold a part of the
    # client's added time and no other cause's (schema 2; older reports: one, from `layer`).
    causes: list[Cause] = field(default_factory=list)
    # what the Go runtime changed of itself in the phase ("GOMAXPROCS at api 4 -> 2 (...)")
    runtime: list[str] = field(default_factory=list)
    # The client's added time as the layers' is counted: inside the phase's window, per request
    # of the phase (None in older reports: the added mean). The shares (`explained`, the
    # causes', the contributions') are of it.
    in_phase_ms: float | None = None
    # the rest of the client's added mean: a backlog the phase left, draining after its end,
    # where no probe's figures for the phase reach (negative: a backlog of the phase before,
    # drained inside this one)
    carried_ms: float = 0.0

    @property
    def client_added_in_phase_ms(self) -> float:
        return self.client_added_mean_ms if self.in_phase_ms is None else self.in_phase_ms

    def carried_words(self) -> str:
        """The carried time in words, when it is worth saying (a tenth of the client's added
        mean, and 2 ms, or more) on a verdict that has shares: "" otherwise."""
        floor = max(CARRIED_WORTH_SAYING * abs(self.client_added_mean_ms), CARRIED_FLOOR_MS)
        if self.status is Status.NO_CHANGE or not self.causes or abs(self.carried_ms) < floor:
            return ""
        if self.carried_ms > 0:
            return f"{self.carried_ms:+.1f} ms after the phase's end, its backlog draining"
        return f"{self.carried_ms:+.1f} ms: the phase before's backlog, drained inside this one"

    @property
    def fault_causes(self) -> list[Cause]:
        return [c for c in self.causes if c.kind is CauseKind.FAULT]

    @property
    def primary_causes(self) -> list[Cause]:
        """The causes the verdict is about, the main one first: the faults' (side effects are listed
        apart), or, in a phase whose causes no fault declared (a control), all of them."""
        return self.fault_causes or self.causes

    def sentence(self) -> str:
        text = self._sentence()
        return f"{text}; Go runtime: {', '.join(self.runtime)}" if self.runtime else text

    def _sentence(self) -> str:
        head = f"phase {self.phase}: client p50 {self.client_added_p50_ms:+.1f} ms"
        if self.status is Status.ABSORBED:
            primary = self.primary_causes
            if len(primary) <= 1:
                outer = [
                    f"{c.layer} at {c.target}"
                    for c in self.contributions
                    if c.explained >= 0.5 and (c.layer, c.target) != (self.layer, self.target)
                ]
                inside = f" (inside {', '.join(outer)})" if outer else ""
                text = (
                    f"{head}, absorbed by {self.layer} at {self.target}{inside}, "
                    f"{self.explained:.0%} explained ({self.added_ms:+.1f} ms per request{self._of()})"
                )
            else:
                text = (
                    f"{head}, absorbed by {len(primary)} causes: {_listed(primary)}; "
                    f"{self.explained:.0%} explained{self._of()}"
                )
            others = [
                c
                for c in self.causes
                if c not in primary and (c.layer, c.target) != (self.layer, self.target)
            ]
            if others:
                text += f"; side effect{'s' if len(others) > 1 else ''}: {_listed(others)}"
            return text
        if self.status is Status.NO_CHANGE:
            return f"{head}, no significant change ({self.reason})"
        return f"{head}, {self.status.upper()}: {self.reason}"

    def _of(self) -> str:
        """What the explained share is of, when the phase's window does not hold the whole mean."""
        carried = self.carried_words()
        return f", of {self.client_added_in_phase_ms:+.1f} ms in the phase; {carried}" if carried else ""


def _listed(causes: list[Cause]) -> str:
    return ", ".join(f"{c.name} {c.added_ms:+.1f} ms ({c.share:.0%})" for c in causes)


@dataclass(frozen=True)
class ErrorRow:
    """What one Envoy answered in one phase, from its own access log."""

    phase: str
    target: str  # the Envoy
    requests: int
    errors: int  # 5xx, or no response
    flags: dict[str, int] = field(default_factory=dict)  # Envoy's response flag -> requests
    retried: int = 0  # requests that took more than one try
    retried_ok: int = 0  # of those, the ones that succeeded: a fault the retries absorbed
    flagged_p50_ms: float | None = None  # how long the flagged requests took (median)
    # the error window: when the first and the last failed request started (epoch seconds)
    first_error: float | None = None
    last_error: float | None = None


@dataclass
class XdsAck:
    """An Envoy's answer to the response that carried one type of a config version."""

    type: str  # clusters, endpoints, routes, listeners
    sent_ms: float  # from the version's snapshot to the response sent
    ack_ms: float | None  # to its ACK; None: refused (NACK)
    error: str = ""  # the NACK's error detail


@dataclass
class XdsVersion:
    """A config version a control plane set for one Envoy (node), and how it got there."""

    control: str  # the xds-control target
    node: str  # the Envoy (its node id: the target's name)
    version: str
    at: float  # epoch seconds of its snapshot
    phase: str  # the phase it was set in ("" between phases)
    why: str  # what set it: the initial file, a change, an endpoint's health
    changed: list[str] = field(default_factory=list)  # the types it changed
    sync_ms: float | None = None  # snapshot to the last ACK of a changed type; None: not synced
    superseded: bool = False  # replaced by the next version before it was sent (never synced)
    acks: list[XdsAck] = field(default_factory=list)
    # what made it slower than the versions no fault touched (their median sync: typical_ms)
    slowed_by: str = ""
    typical_ms: float | None = None
    # what it served, as TARGET=IP:PORT (the address as that Envoy reaches it), and the
    # endpoints (target names) it added and removed against the version before it
    endpoints: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # the client-visible window, from the Envoy's access log: requests that started after the
    # snapshot and still went to a removed endpoint (and how many of them failed), when the
    # last of them started, and when the first request went to an added endpoint
    stale_requests: int = 0
    stale_errors: int = 0
    stale_until_ms: float | None = None
    first_use_ms: float | None = None


@dataclass(frozen=True)
class SweepValue:
    """One value of a sweep: the client's view of its phase and the layer that absorbed it."""

    value: str  # as the scenario gives it
    x: float  # in the fault's unit (seconds, percent, cores, bits/s)
    phase: str
    requests: int
    error_rate: float
    p50_ms: float
    p99_ms: float
    status: str  # the verdict's status
    absorber: str  # "network at api", "errors at edge (UT)", "no-change", "inconclusive"
    layer: str = ""  # the verdict's main cause, when absorbed
    target: str = ""
    explained: float = 0.0  # the causes' share of the client's added time
    held: bool = True  # every expectation of the sweep held at this value
    failed: list[str] = field(default_factory=list)  # those that did not, in words


@dataclass(frozen=True)
class SweepRecord:
    """A sweep's curve: per value the client's p50, p99 and error rate and the absorbing
    layer; the breaking point (the first value an expectation fails at) and the values over
    which each absorber held."""

    name: str
    kind: str
    target: str
    param: str
    values: list[SweepValue]
    breaking_point: str = ""  # the value; "" when every expectation held at every value
    breaking_reason: str = ""
    through: str = ""  # the value its expectations had to hold through ("": all)
    # [absorber, first value, last value]: runs of values with one absorber, in sweep order
    absorbers: list[list[str]] = field(default_factory=list)

    def sentence(self) -> str:
        runs = []
        for i, (who, first, last) in enumerate(self.absorbers):
            span = first if first == last else f"{first} to {last}"
            runs.append(
                f"{who} absorbs {span}"
                if i == 0
                else f"from {first}: {who}" + ("" if first == last else f" (to {last})")
            )
        head = f"sweep {self.name} ({self.kind} {self.param} at {self.target})"
        broke = (
            f"breaks at {self.breaking_point}: {self.breaking_reason}"
            if self.breaking_point
            else "no breaking point: every expectation held at every value"
        )
        return f"{head}: {'; '.join(runs)}; {broke}"


@dataclass(frozen=True)
class ObserverCost:
    """What one probe cost its targets during the run: the time its BPF programs ran (the
    kernel's statistics) and, for uprobes, the traps (hits times the trap cost timed at start-up)."""

    layer: str
    targets: list[str]
    mechanism: str
    why: str  # why the run attached it
    events: int  # runs of its BPF programs
    bpf_ms: float  # their run time
    traps: int  # uprobe hits
    trap_ms: float  # their traps' cost
    # what each target paid: the cost in proportion to the runs in its own threads
    paid_ms: dict[str, float]
    per_request_us: float  # what its targets paid together, per request of the run
    latency_share: float  # that cost over the time the requests took (their latencies' sum)
    over_budget: bool  # its share above the run's budget (probes.budget)
    lost_at: float | None = None  # epoch seconds the kill switch detached it (probes.limit)
    lost: str = ""  # why
    dropped: int = 0  # events a full BPF map refused: missing from its layer's figures


@dataclass(frozen=True)
class Unmeasured:
    """A layer whose probe could not attach at a target in this run, and why."""

    layer: str
    target: str
    reason: str


@dataclass(frozen=True)
class ExpectationResult:
    expectation: str
    path: str
    held: bool
    detail: str
    required: bool = True  # its failure fails the run (not: a sweep's value past its `through`)
    sweep: str = ""  # the sweep it checks one value of
    phase: str = ""

    @property
    def outcome(self) -> str:
        """held; FAILED; or broke: failed at a sweep's value it need not hold at (a breaking point)."""
        return "held" if self.held else "FAILED" if self.required else "broke"


@dataclass(frozen=True)
class AbortRecord:
    """Why the run stopped early, and how fast its faults were undone."""

    condition: str  # error_rate, p50, p99, unhealthy, added, target_exit; switch, deadline, terminated
    reason: str
    phase: str  # the phase it happened in
    at: float  # epoch seconds
    by: str  # "chaoslab" (a stop condition) or "watchdog" (the dead man's switch)
    # Seconds to the last fault's revert: from the trip (a stop condition), from chaoslab's last
    # heartbeat (the switch), from the fault's deadline (a fault past its phase's end + margin).
    revert_s: float
    bound_s: float  # what chaoslab promises for revert_s
    reverts: dict[str, float] = field(default_factory=dict)  # each fault's, from the same moment
    undo_s: float = 0.0  # of revert_s, the undo itself: from the trip to the last revert

    def sentence(self) -> str:
        what = "stop condition" if self.by == "chaoslab" else "dead man's switch"
        since = {"chaoslab": "the trip", "watchdog": "the last heartbeat"}.get(self.by, "the trip")
        if self.condition == "deadline":
            since = "the fault's deadline"
        n = len(self.reverts)
        itself = f", the undo itself {self.undo_s:.2f} s" if self.by == "watchdog" and self.undo_s else ""
        undone = (
            f"{n} fault{'s' if n != 1 else ''} reverted {self.revert_s:.2f} s after {since} "
            f"(bound {self.bound_s:g} s{itself})"
            if n
            else "no fault was applied"
        )
        return f"ABORTED in phase {self.phase} by the {what} ({self.condition}): {self.reason}; {undone}"


@dataclass(frozen=True)
class LiveStatus:
    """Where a run is, for the live page while it goes (not part of the saved report)."""

    now: float
    phase: str
    elapsed: float
    duration: float
    faults: list[str]  # the active faults, in words
    final: bool  # the run is over: the page is the finished report
    note: str = ""
    abort: str = ""  # the stop condition or switch that tripped, in words


@dataclass
class Report:
    scenario: str
    run_id: str
    runtime: str
    started: float
    probes: list[str]
    phases: list[PhaseRecord]
    client: list[ClientRow]
    layers: list[LayerRow]
    verdicts: list[Verdict]  # one per compared phase (every fault phase, and controls)
    expectations: list[ExpectationResult]
    baseline_drift: str | None = None
    requests: list[ClientRow] = field(default_factory=list)  # per phase and request name
    timeline: list[SecondRow] = field(default_factory=list)
    generator: GeneratorRecord | None = None
    # FineHistogram JSON of the client's latencies: {"phases": {phase: h}, "seconds": [h, ...]}
    histograms: dict[str, object] = field(default_factory=dict)
    # Layers that could not attach on this kernel or target: the run went on without them.
    unmeasured: list[Unmeasured] = field(default_factory=list)
    kernel: str = ""  # the kernel release the run measured on
    # What each probe cost the targets, and the budget per request it was held to.
    observer: list[ObserverCost] = field(default_factory=list)
    observer_budget: float = 0.0  # the share of the requests' time a probe may cost (probes.budget)
    # a uprobe hit's cost on this machine, timed at start-up: stepped out of line (a RET), and
    # on an instruction the kernel emulates (the Go probes' entries)
    trap_us: float = 0.0
    trap_emulated_us: float = 0.0
    # Layers the run did not attach because nothing in the scenario needed them, and why.
    left_out: list[Unmeasured] = field(default_factory=list)
    abort: AbortRecord | None = None  # the run stopped early: a stop condition or the switch
    # The xds layer: every config version of every xDS control plane, per Envoy.
    xds: list[XdsVersion] = field(default_factory=list)
    # Where the errors came from: each Envoy's answers per phase (its response flags, retries).
    errors: list[ErrorRow] = field(default_factory=list)
    # The remote Docker engine the targets ran on ("" on this machine).
    engine: str = ""
    # Each sweep's curve over its values, and its breaking point.
    sweeps: list[SweepRecord] = field(default_factory=list)
    schema: str = SCHEMA

    @property
    def passed(self) -> bool:
        """Not aborted, expectations held, no phase invalid, and the load generator kept up."""
        return (
            self.abort is None
            and all(e.held for e in self.expectations if e.required)
            and not any(v.status is Status.INVALID for v in self.verdicts)
            and not (self.generator is not None and self.generator.saturated)
        )

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["passed"] = self.passed
        return data
