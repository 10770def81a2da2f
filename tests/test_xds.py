"""The mesh: chaoslab's xDS control plane (docker/xds-control, go-control-plane) serving Envoy
its clusters, endpoints and route over delta ADS, withdrawing a killed instance, and the xds
layer timing each version from its snapshot to Envoy's ACK.

Validation first (no privileges), then one short failover run per runtime (real Envoy, real
control plane, two go-api instances, one killed and kept down), read by several tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from chaoslab.scenario import parse_scenario
from chaoslab.targets import envoy_config
from chaoslab.targets.certs import Certs
from chaoslab.targets.services import Peer
from tests.conftest import ScenarioRun
from tests.test_targets import problems

MESH = """
name: t
targets:
  api-a: {service: go-api}
  api-b: {service: go-api}
  mesh: {service: xds-control, clusters: {api: [api-a, api-b]}}
  edge: {service: envoy, xds: mesh}
load: {target: edge, path: /, rate: 5/s}
phases:
  - {name: baseline, duration: 5s}
  - {name: fault, duration: 5s, faults: [{kind: process, target: api-b, action: kill, restart: false}]}
"""


# -- validation ------------------------------------------------------------------------


def test_an_envoy_with_a_control_plane_links_to_its_endpoints_and_the_plane_to_every_envoy() -> None:
    s = parse_scenario(MESH)
    edge, mesh = s.targets["edge"], s.targets["mesh"]
    assert edge.links == ("mesh", "api-a", "api-b")  # it starts after them and reaches them
    assert [n for n, _ in edge.files] == ["bootstrap", "resources"]
    assert mesh.links == ("api-a", "api-b")
    argv = " ".join(mesh.argv)
    assert "-node edge={workdir}/edge-resources.json" in argv
    assert "-check api-a={targets.api-a.host}:{targets.api-a.ports.https}" in argv
    assert "-health-interval 200ms" in argv
    assert mesh.control_ports == (18001,)  # the control API is never faulted; ADS (18000) can be


def test_what_the_control_plane_serves_is_envoy_json_with_each_endpoint_named(tmp_path) -> None:
    s = parse_scenario(
        MESH.replace(
            "clusters: {api: [api-a, api-b]}",
            "clusters: {api: [api-a], b: [api-b]}, routes: {api: 90, b: 10}",
        )
    )
    mesh = s.targets["edge"].mesh
    assert mesh is not None
    certs = Certs(tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem")
    peers = {
        "api-a": Peer("10.0.0.2", {"https": 8443, "http": 8080}, certs.ca),
        "api-b": Peer("10.0.0.6", {"http": 8080}, None, verify=False),
    }
    doc = envoy_config.mesh_resources(mesh, peers, 1)
    by_type: dict[str, list[dict]] = {}
    for r in doc["resources"]:
        by_type.setdefault(r["@type"].rsplit(".", 1)[1], []).append(r)
    clusters = {c["name"]: c for c in by_type["Cluster"]}
    assert clusters["api"]["type"] == "EDS" and "transport_socket" in clusters["api"]
    assert "transport_socket" not in clusters["b"]  # api-b has no https port: plain HTTP
    lb = {c["cluster_name"]: c["endpoints"][0]["lb_endpoints"] for c in by_type["ClusterLoadAssignment"]}
    assert lb["api"] == [
        {
            "endpoint": {
                "address": {"socket_address": {"address": "10.0.0.2", "port_value": 8443}},
                "hostname": "api-a",
            }
        }
    ]
    assert lb["b"][0]["endpoint"]["address"]["socket_address"]["port_value"] == 8080
    [route] = by_type["RouteConfiguration"]
    assert route["name"] == envoy_config.WEB_ROUTE
    weighted = route["virtual_hosts"][0]["routes"][0]["route"]["weighted_clusters"]["clusters"]
    assert weighted == [{"name": "api", "weight": 90}, {"name": "b", "weight": 10}]
    boot = envoy_config.ads_bootstrap(certs, "edge", "10.0.0.10", 18000)
    assert boot["node"]["id"] == "edge"
    assert boot["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
    sotw = envoy_config.ads_bootstrap(certs, "edge", "10.0.0.10", 18000, api="sotw")
    assert sotw["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["rds"]["route_config_name"] == envoy_config.WEB_ROUTE
    json.dumps(boot)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("xds: mesh", "xds: api-a"), "targets.edge.xds: api-a is not an xDS control plane"),
        (
            ("xds: mesh", "xds: mesh, upstream: api-a"),
            "targets.edge.xds: takes its clusters from a control plane",
        ),
        (("xds: mesh", "xds: nowhere"), "targets.edge.xds: unknown target 'nowhere'"),
        (("xds: mesh", "xds: mesh, xds_api: rest"), "targets.edge.xds_api"),
        (("xds: mesh}", "upstream: api-a, xds_api: sotw}"), "targets.edge.xds_api: only an envoy with xds:"),
        (("[api-a, api-b]", "[api-a, api-c]"), "targets.mesh.clusters.api[1]: unknown target 'api-c'"),
        (("[api-a, api-b]", "[api-a, api-a]"), "targets.mesh.clusters.api[1]: api-a is listed twice"),
        (("[api-a, api-b]", "[]"), "targets.mesh.clusters.api: expected a list of targets"),
        (
            ("{api: [api-a, api-b]}", "{api: [api-a, api-b]}, routes: {web: 1}"),
            "targets.mesh.routes.web: unknown cluster 'web'",
        ),
        (
            ("{api: [api-a, api-b]}", "{api: [api-a, api-b]}, routes: {api: -1}"),
            "targets.mesh.routes.api: weight -1",
        ),
        (
            ("{api: [api-a, api-b]}", "{api: [api-a, api-b]}, routes: {api: 0}"),
            "targets.mesh.routes: every weight is 0",
        ),
        (
            ("{api: [api-a, api-b]}", "{api: [api-a, api-b]}, health_interval: 1ms"),
            "targets.mesh.health_interval: must be at least",
        ),
        (
            ("{api: [api-a, api-b]}", "{api: {endpoints: [api-a], port: grpc}}"),
            "targets.mesh.clusters.api.port",
        ),
        (
            ("{service: xds-control, clusters: {api: [api-a, api-b]}}", "{service: xds-control}"),
            "targets.mesh.clusters: is required",
        ),
        (("phases:", "expect: [{phase: fault, xds_sync_below: 0}]\nphases:"), "expect[0].xds_sync_below"),
        (
            (", faults:", ", changes: [{at: 5s, target: mesh, routes: {api: 1}}], faults:"),
            "phases[1].changes[0].at: 5s is not inside its phase",
        ),
        (
            (", faults:", ", changes: [{target: api-a, routes: {api: 1}}], faults:"),
            "phases[1].changes[0].target: api-a is not an xDS control plane",
        ),
        (
            (", faults:", ", changes: [{target: mesh, clusters: {web: [api-a]}}], faults:"),
            "phases[1].changes[0].clusters.web: mesh serves no cluster 'web'",
        ),
        (
            (", faults:", ", changes: [{target: mesh, clusters: {api: [edge]}}], faults:"),
            "phases[1].changes[0].clusters.api: edge is not among the targets mesh serves",
        ),
        (
            (", faults:", ", changes: [{target: mesh, routes: {web: 1}}], faults:"),
            "phases[1].changes[0].routes.web: unknown cluster",
        ),
        ((", faults:", ", changes: [{target: mesh}], faults:"), "phases[1].changes[0]: changes nothing"),
        (("{api: [api-a, api-b]}", "{}"), "targets.mesh.clusters: names no cluster"),
        (
            ("{api: [api-a, api-b]}", "{api: [api-a, api-b]}, routes: {}"),
            "targets.mesh.routes: gives no weight",
        ),
        (
            ("{api: [api-a, api-b]}", "{api: [api-a, api-b]}, health_timeout: 0s"),
            "targets.mesh.health_timeout",
        ),
        (("xds: mesh}", "xds: mesh, ports: {grpc: 1}}"), "targets.edge.ports: unknown key"),
    ],
)
def test_bad_mesh_input_is_named_by_its_path(change: tuple[str, str], expected: str) -> None:
    found = problems(MESH.replace(*change))
    assert any(expected in p for p in found), found


def test_an_endpoint_envoy_cannot_send_requests_to_is_refused() -> None:
    text = MESH.replace("api-b: {service: go-api}", "api-b: {program: [/bin/true], ports: {tcp: 6379}}")
    found = problems(text)
    assert any("targets.mesh.clusters.api: api-b declares no http port" in p for p in found), found
    # endpoints of one cluster share a protocol: an https-only one beside an http-only one
    mixed = MESH.replace("api-b: {service: go-api}", "api-b: {program: [/bin/true], ports: {http: 8080}}")
    found = problems(
        mixed.replace("api-a: {service: go-api}", "api-a: {program: [/bin/true], ports: {https: 8443}}")
    )
    assert any("targets.mesh.clusters.api: api-a declares no http port" in p for p in found), found
    # a standby target moved in by a change must speak the cluster's protocol too
    standby = MESH.replace(
        "clusters: {api: [api-a, api-b]}", "clusters: {api: [api-a, api-b]}, standby: [api-c]"
    ).replace(
        "  api-b: {service: go-api}",
        "  api-b: {service: go-api}\n  api-c: {program: [/bin/true], ports: {tcp: 1}}",
    )
    found = problems(standby)
    assert any("targets.mesh.standby: api-c declares no https or http port" in p for p in found), found
    moved = standby.replace("ports: {tcp: 1}", "ports: {http: 8080}").replace(
        ", faults:",
        ", changes: [{target: mesh, clusters: {api: {endpoints: [api-c], port: https}}}], faults:",
    )
    found = problems(moved)
    assert any("phases[1].changes[0].clusters.api: api-c declares no https port" in p for p in found), found


def test_health_checks_are_named_exactly() -> None:
    # an endpoint whose name ends another's (b, api-b) is still checked
    text = MESH.replace("api-b", "b")
    argv = parse_scenario(text).targets["mesh"].argv
    checks = [argv[i + 1] for i, a in enumerate(argv) if a == "-check"]
    assert [c.split("=")[0] for c in checks] == ["api-a", "b"]
    assert "-health-timeout" in argv and "grpc" not in parse_scenario(text).targets["edge"].port_map


def test_a_sync_expectation_needs_a_control_plane() -> None:
    text = (
        "name: t\ntargets: {api: {service: go-api}}\nload: {target: api, path: /, rate: 5/s}\n"
        "phases: [{name: b, duration: 5s}, {name: c, duration: 5s}]\n"
        "expect: [{phase: c, xds_sync_below: 50ms}]\n"
    )
    found = problems(text)
    assert any("expect[0].xds_sync_below: no target is an xDS control plane" in p for p in found), found


# -- real runs -------------------------------------------------------------------------


# A push to ACK takes a few ms here; the bound is a busy machine's (one stalled scheduling
# of Envoy or the control plane is tens of ms), far below a push that is lost or retried
SYNC_MS = 200


def _failover_checks(run: ScenarioRun) -> None:
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    report = run.report
    rows = report["xds"]
    assert {(v["control"], v["node"]) for v in rows} == {("mesh", "edge")}
    by_why = {v["why"]: v for v in rows}
    # the kill: the control plane's checks withdraw api-b in the kill phase, Envoy ACKs it
    down = by_why["health: api-b down"]
    assert down["phase"] == "kill-b" and down["changed"] == ["endpoints"]
    assert down["sync_ms"] is not None and 0 < down["sync_ms"] < SYNC_MS
    [ack] = down["acks"]
    assert ack["type"] == "endpoints" and ack["ack_ms"] == down["sync_ms"] and ack["sent_ms"] <= ack["ack_ms"]
    kill = report["phases"][1]["faults"][0]
    assert kill["observed"] and "kept down" in kill["detail"]
    start = report["phases"][1]["start"] - report["phases"][1]["settle_s"]  # the kill began here
    # withdrawn within a few of its 100 ms checks of the kill (two failures in a row)
    assert 0 < down["at"] - start < 1.5, (down["at"], start)
    # the error window at edge (no retries): requests still sent to api-b failed (UF) from the
    # kill until its withdrawal reached Envoy, and not after
    failed = next(r for r in report["errors"] if (r["phase"], r["target"]) == ("kill-b", "edge"))
    if failed["errors"]:
        assert set(failed["flags"]) <= {"UF", "UC", "UR"}, failed
        assert start - 0.2 <= failed["first_error"] <= failed["last_error"]
        assert failed["last_error"] <= down["at"] + down["sync_ms"] / 1000 + 0.1, (failed, down)
    # the version that withdrew api-b removed it, and Envoy's log says no request went to it
    # once Envoy had applied it (the ACK follows the apply)
    assert down["removed"] == ["api-b"] and not down["added"]
    assert down["stale_until_ms"] is None or down["stale_until_ms"] <= down["sync_ms"] + 5, down
    # api-b back on revert: served again in the recovery phase
    up = by_why["health: api-b up"]
    assert up["phase"] == "recovery" and up["sync_ms"] is not None
    assert up["added"] == ["api-b"] and up["first_use_ms"] is not None and up["first_use_ms"] >= 0
    assert any(e.startswith("api-b=") for e in up["endpoints"])
    assert [e["held"] for e in report["expectations"]] == [True, True, True, True]
    # the same change through 100 ms of delay on the control plane's link to Envoy: the new
    # endpoints cross it once (the ACK goes back on Envoy's side, undelayed), and the report
    # names that fault as what slowed the sync
    slowed = next(v for v in rows if v["phase"] == "slow-link" and v["why"].startswith("change"))
    assert 100 <= slowed["sync_ms"] < 100 + SYNC_MS, slowed
    assert slowed["slowed_by"].startswith("network fault on mesh's link to edge"), slowed
    assert slowed["typical_ms"] < SYNC_MS
    assert all(not v["slowed_by"] for v in rows if v["phase"] != "slow-link")
    # a dead instance is not a dead service, a control plane's link is not the requests' path:
    # Envoy served from api-a, and neither phase is INVALID for lack of the fault's events
    assert [v["phase"] for v in report["verdicts"]] == ["kill-b", "slow-link"]
    # (inconclusive is the machine's noise: a 2-core VM running two Envoys, three Go services
    # and the load can move the client by the verdict's threshold while nothing is faulted)
    assert all(v["status"] != "invalid" for v in report["verdicts"]), report["verdicts"]
    # the config change: api-b drained one second into its phase, given back at its end
    drain = report["phases"][3]
    [change] = drain["changes"]
    assert change["target"] == "mesh" and change["what"] == "api -> [api-a]" and not change["error"]
    moved = next(v for v in rows if v["version"] == change["versions"]["edge"])
    assert moved["why"] == "change: api -> [api-a]" and moved["phase"] == "drain-b"
    assert moved["sync_ms"] is not None and moved["sync_ms"] < SYNC_MS
    assert any(v["why"].startswith("restore") and v["sync_ms"] is not None for v in rows)
    app = {
        (r["phase"], r["target"]): r["count"]
        for r in report["layers"]
        if r["layer"] == "app" and not r["metric"]
    }
    # api-b served half of the baseline's requests, and in the drained phase only its first second's
    assert app[("drain-b", "api-b")] < 0.5 * app[("baseline", "api-b")], app
    assert "xds mesh -> edge: 7 versions" in run.stdout
    # the events are on disk, one JSON line each, the ACK after its response
    lines = [json.loads(x) for x in (run.out / "work" / "xds-mesh.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in lines]
    assert kinds.count("version") == 7 and "nack" not in kinds


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_a_killed_instance_is_withdrawn_and_the_sync_is_timed(
    scenario_run: Callable[..., ScenarioRun],
) -> None:
    _failover_checks(scenario_run("xds_failover"))


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine", "docker_engine")
def test_the_same_failover_on_the_docker_runtime(scenario_run: Callable[..., ScenarioRun]) -> None:
    run = scenario_run("xds_failover", "docker")
    _failover_checks(run)
    assert run.report["runtime"] == "docker"


# -- Envoy's resilience settings and where errors came from -----------------------------

RESILIENT = """
name: t
targets:
  api: {service: go-api}
  edge:
    service: envoy
    upstream: api
    timeout: 500ms
    retries: {attempts: 2, per_try_timeout: 100ms, retry_on: "5xx,reset"}
    circuit_breaker: {max_connections: 4, max_pending: 2}
    outlier_detection: {consecutive_5xx: 3, interval: 2s, ejection: 10s}
load: {target: edge, path: /, rate: 5/s}
phases:
  - {name: baseline, duration: 5s}
  - {name: fault, duration: 5s, faults: [{kind: cpu, target: api, cpus: 0.1}]}
"""


def test_resilience_settings_go_into_envoys_config(tmp_path) -> None:
    from chaoslab.targets.builtins import BUILTINS
    from chaoslab.targets.services import Launch

    s = parse_scenario(RESILIENT)
    edge = s.targets["edge"]
    certs = Certs(tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem")
    launch = Launch(tmp_path, certs, {"api": Peer("10.0.0.2", {"https": 8443}, certs.ca)})
    boot = json.loads(BUILTINS["envoy"].generate(edge, "bootstrap", launch))
    [cluster] = boot["static_resources"]["clusters"]
    assert cluster["circuit_breakers"] == {"thresholds": [{"max_connections": 4, "max_pending_requests": 2}]}
    assert cluster["outlier_detection"] == {
        "consecutive_5xx": 3,
        "interval": "2s",
        "base_ejection_time": "10s",
        "max_ejection_percent": 100,
    }
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    assert route["timeout"] == "0.5s"
    assert route["retry_policy"] == {"retry_on": "5xx,reset", "num_retries": 2, "per_try_timeout": "0.1s"}
    [log] = hcm["access_log"]
    assert log["typed_config"]["path"] == str(tmp_path / "envoy-edge-access.jsonl")
    assert "%RESPONSE_FLAGS%" in log["typed_config"]["log_format"]["json_format"].values()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("timeout: 500ms", "timeout: 0s"), "targets.edge.timeout: must be greater than zero"),
        (
            ("per_try_timeout: 100ms", "per_try_timeout: 1s"),
            "targets.edge.retries.per_try_timeout: a try of 1s",
        ),
        (("attempts: 2", "attempts: 11"), "targets.edge.retries.attempts"),
        (('retry_on: "5xx,reset"', 'retry_on: "5xx; rm"'), "targets.edge.retries.retry_on"),
        (
            ("{max_connections: 4, max_pending: 2}", "{max_connections: 0}"),
            "targets.edge.circuit_breaker.max_connections",
        ),
        (("{max_connections: 4, max_pending: 2}", "{}"), "targets.edge.circuit_breaker: sets no threshold"),
        (
            ("{max_connections: 4, max_pending: 2}", "{max_conns: 4}"),
            "targets.edge.circuit_breaker.max_conns: unknown key",
        ),
        (("consecutive_5xx: 3, ", ""), "targets.edge.outlier_detection.consecutive_5xx: is required"),
        (("interval: 2s", "interval: 2h"), "targets.edge.outlier_detection.interval: must be at most"),
        (
            ('retries: {attempts: 2, per_try_timeout: 100ms, retry_on: "5xx,reset"}', "retries: many"),
            "targets.edge.retries: expected 0 to 10 retries",
        ),
    ],
)
def test_bad_resilience_settings_are_named_by_their_path(change: tuple[str, str], expected: str) -> None:
    found = problems(RESILIENT.replace(*change))
    assert any(expected in p for p in found), found


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_a_slow_dependency_behind_a_breaker_retries_and_neither(
    scenario_run: Callable[..., ScenarioRun],
) -> None:
    run = scenario_run("circuit_breaker")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    report = run.report
    rows = {(r["phase"], r["target"]): r for r in report["errors"]}
    assert {t for _, t in rows} == {"guarded", "retrying", "bare"}
    for envoy in ("guarded", "retrying", "bare"):
        assert rows[("baseline", envoy)]["errors"] == 0 and rows[("baseline", envoy)]["requests"] > 100
    # the breaker: fast 503s flagged UO (overflow), answered without waiting for the slow cache
    guarded = rows[("slow-cache", "guarded")]
    assert guarded["flags"].get("UO", 0) > 0 and guarded["errors"] >= guarded["flags"]["UO"]
    assert guarded["flagged_p50_ms"] is not None and guarded["flagged_p50_ms"] < 30
    # retries: each try cut at 40 ms, retried, then out of retries: tries and timeouts, no mystery
    retrying = rows[("slow-cache", "retrying")]
    assert retrying["retried"] > 0.3 * retrying["requests"] and retrying["flags"].get("UT", 0) > 0
    # neither: no errors, the latency of the slow dependency
    bare = rows[("slow-cache", "bare")]
    assert bare["errors"] == 0 and not bare["flags"]
    p50 = {(r["phase"], r["name"]): r["p50_ms"] for r in report["requests"]}
    assert p50[("slow-cache", "bare")] > p50[("baseline", "bare")] + 40
    # the slow dependency itself is what the latency verdict names
    [verdict] = report["verdicts"]
    assert (verdict["status"], verdict["layer"], verdict["target"]) == ("absorbed", "network", "app")
    assert "the circuit breaker at guarded failed them fast" in run.stdout
    assert "retried" in run.stdout and "errors at bare" not in run.stdout
    for envoy in ("guarded", "retrying", "bare"):
        assert rows[("recovery", envoy)]["errors"] == 0


# -- reading what the control plane and Envoy logged (no privileges) ----------------------


def _phases() -> list:
    from chaoslab.report.model import PhaseRecord

    return [PhaseRecord("baseline", 100.0, 110.0, []), PhaseRecord("kill", 110.0, 120.0, [])]


def test_versions_acks_lives_and_superseded_versions_from_the_event_log() -> None:
    from chaoslab.analysis import xds

    s = 1_000_000_000
    ev = [
        {"event": "start", "ns": 99 * s},
        {
            "event": "version",
            "node": "edge",
            "version": "1",
            "why": "file",
            "changed": ["endpoints"],
            "endpoints": ["a=10.0.0.2:8443", "b=10.0.0.6:8443"],
            "ns": 99 * s,
        },
        {"event": "sent", "node": "edge", "version": "1", "type": "endpoints", "ns": 99 * s + 1_000_000},
        {"event": "ack", "node": "edge", "version": "1", "type": "endpoints", "ns": 99 * s + 2_000_000},
        # two versions within one round trip: the first is never sent
        {
            "event": "version",
            "node": "edge",
            "version": "2",
            "why": "health: b down",
            "changed": ["endpoints"],
            "endpoints": ["a=10.0.0.2:8443"],
            "ns": 111 * s,
        },
        {
            "event": "version",
            "node": "edge",
            "version": "3",
            "why": "put",
            "changed": ["endpoints"],
            "endpoints": ["a=10.0.0.2:8443", "c=10.0.0.9:8443"],
            "ns": 111 * s + 100_000_000,
        },
        {"event": "sent", "node": "edge", "version": "3", "type": "endpoints", "ns": 111 * s + 100_300_000},
        {"event": "ack", "node": "edge", "version": "3", "type": "endpoints", "ns": 111 * s + 101_600_000},
        # the control plane restarted: its versions count from 1 again, a NACK this time
        {"event": "start", "ns": 115 * s},
        {
            "event": "version",
            "node": "edge",
            "version": "1",
            "why": "file",
            "changed": ["clusters"],
            "endpoints": ["a=10.0.0.2:8443"],
            "ns": 115 * s,
        },
        {
            "event": "nack",
            "node": "edge",
            "version": "1",
            "type": "clusters",
            "error": "bad cluster",
            "ns": 115 * s + 10,
        },
    ]
    rows = xds.versions("mesh", ev, _phases())
    assert [(v.version, v.phase, v.sync_ms, v.superseded) for v in rows] == [
        ("1", "", 2.0, False),
        ("2", "kill", None, True),
        ("3", "kill", 1.6, False),
        ("1 (life 2)", "kill", None, False),
    ]
    assert (rows[1].removed, rows[2].added, rows[2].removed) == (["b"], ["b", "c"], []) or rows[2].added == [
        "c"
    ]
    assert rows[3].acks[0].error == "bad cluster" and rows[3].acks[0].ack_ms is None
    log = [
        {"start": "111.05", "code": "200", "upstream": "10.0.0.6:8443"},  # to b, after v2 removed it
        {"start": "111.2", "code": "503", "upstream": "10.0.0.6:8443", "flags": "UF"},
        {"start": "111.3", "code": "200", "upstream": "10.0.0.9:8443"},  # first to c, added by v3
    ]
    xds.client_window(rows, {"edge": log})
    assert (rows[1].stale_requests, rows[1].stale_errors) == (1, 0)  # v2's window ends at v3
    assert rows[2].first_use_ms == pytest.approx(200.0, abs=0.1)


def test_error_rows_count_flags_retries_and_the_error_window() -> None:
    from chaoslab.analysis import errors
    from chaoslab.report import words

    log = [
        {"start": "101", "code": "200", "flags": "-", "attempts": "1", "ms": "3"},
        {"start": "111", "code": "503", "flags": "UO", "attempts": "1", "ms": "0"},
        {"start": "112.5", "code": "503", "flags": "UT,URX", "attempts": "3", "ms": "120"},
        {"start": "113", "code": "200", "flags": "-", "attempts": "2", "ms": "40"},
        {"start": "not a time"},
    ]
    base, kill = errors.rows("edge", log, _phases())
    assert (base.requests, base.errors) == (1, 0)
    assert (kill.requests, kill.errors, kill.retried, kill.retried_ok) == (3, 2, 2, 1)
    assert kill.flags == {"UO": 1, "UT": 1, "URX": 1} and (kill.first_error, kill.last_error) == (
        111.0,
        112.5,
    )
    [line] = words.error_lines([base, kill], "baseline", {"kill": 110.0})
    assert "from 1.00 s to 2.50 s into the phase" in line and "1 of them then succeeded" in line
