"""Load against any API: gRPC requests from .proto files (compiled once per run) or server
reflection, tcp request/response; their validation (exit 2, every problem with its YAML
path), the problems found once the schema is read (exit 3, before any load), and real runs
against the go-api (gRPC by .proto and by reflection) and Debian's redis-server (tcp)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent import futures
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from google.protobuf import json_format
from grpc_reflection.v1alpha import reflection

from chaoslab.errors import LoadError
from chaoslab.load import protos
from chaoslab.load.grpc_schema import GrpcSchemas
from chaoslab.orchestrator import new_run
from chaoslab.scenario import Scenario, ScenarioError, parse_scenario
from tests.conftest import REPO, SCENARIOS, ScenarioRun, chaoslab, story

DATA = REPO / "tests" / "data" / "grpc"
SHOP = DATA / "shop.proto"
VENDOR = DATA / "vendor"

BASE = f"""
name: s
targets:
  api: {{service: go-api}}
  edge: {{service: envoy, upstream: api}}
  shop: {{program: [redis-server], ports: {{grpc-plain: 9000, tcp: 6379}}}}
  own: {{program: [redis-server], ports: {{grpc: 9443}}, protos: [{SHOP}], proto_path: [{VENDOR}]}}
phases:
  - {{name: baseline, duration: 5s}}
"""


def problems(load: str, extra: str = "") -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(BASE + load + extra)
    return str(info.value)


def scenario(requests: str, target: str = "shop", protocol: str = "grpc-plain") -> Scenario:
    return parse_scenario(
        BASE + f"load: {{protocol: {protocol}, target: {target}, rate: 10/s, requests: {requests}}}\n"
    )


# --- validation: exit 2, nothing started -----------------------------------------------------

GRPC = "load: {protocol: grpc-plain, target: shop, rate: 10/s, requests: [REQ]}"
TCP = "load: {protocol: tcp, target: shop, rate: 10/s, requests: [REQ]}"
HTTP = "load: {target: api, rate: 10/s, requests: [REQ]}"


@pytest.mark.parametrize(
    ("load", "request_", "expected"),
    [
        (GRPC, "{name: a, method: Shop.Price}", "load.requests[0].method: 'Shop.Price' is not a gRPC method"),
        (GRPC, "{name: a, method: /shop.v1.Shop/Price}", "package.Service/Method"),
        (GRPC, "{name: a, method: 42}", "a int is not a gRPC method name"),
        (GRPC, "{name: a, method: s.S/M, proto: [nowhere.proto]}", "load.requests[0].proto[0]:"),
        (GRPC, "{name: a, method: s.S/M, proto: nowhere.proto}", "nowhere.proto is not a file"),
        (GRPC, "{name: a, method: s.S/M, proto: []}", "load.requests[0].proto: is empty"),
        (GRPC, "{name: a, method: s.S/M, message: [1, 2]}", "load.requests[0].message: expected a mapping"),
        (GRPC, "{name: a, method: s.S/M, message: 'sku: 1'}", "expected a mapping (the request message"),
        (GRPC, "{name: a, method: s.S/M, message: {at: 2024-01-01}}", "a date at at has no JSON form"),
        (GRPC, "{name: a, method: s.S/M, message: {x: [.nan]}}", "is not a number any value here takes"),
        (GRPC, "{name: a, method: s.S/M, message: {1: a}}", "keys are field names"),
        (
            GRPC,
            f"{{name: a, method: s.S/M, proto: {SHOP}, reflection: true}}",
            "load.requests[0].reflection: give either 'proto' files or 'reflection: true'",
        ),
        (GRPC, f"{{name: a, method: s.S/M, proto_path: {VENDOR}}}", "load.requests[0].proto_path: is for"),
        (GRPC, f"{{name: a, method: s.S/M, proto: {SHOP}, proto_path: {SHOP}}}", "is not a directory"),
        (GRPC, "{name: a, rpc: Do, method: s.S/M}", "load.requests[0].rpc: give either 'rpc'"),
        (GRPC, "{name: a, method: s.S/M, work: 3}", "load.requests[0].work: belongs to the go-api shorthand"),
        (GRPC, "{name: a, rpc: Do, message: {}}", "load.requests[0].message: the shorthand 'rpc:' builds"),
        (GRPC, "{name: a, method: s.S/M, replies: 0}", "load.requests[0].replies: must be between 1"),
        (GRPC, "{name: a}", "load.requests[0].method: is required"),
        (GRPC, "{name: a, method: s.S/M, send: PING}", "load.requests[0].send: is for tcp requests"),
        (GRPC, "{name: a, method: s.S/M, path: /x}", "load.requests[0].path: is for HTTP requests"),
        (
            HTTP,
            "{name: a, path: /w, method: shop.v1.Shop/Price}",
            "is a gRPC method, but this request is https",
        ),
        (
            HTTP,
            "{name: a, path: /w, send: PING}",
            "load.requests[0].send: is for tcp requests, this one is https",
        ),
        (HTTP, "{name: a, path: /w, message: {}}", "load.requests[0].message: is for gRPC requests"),
        (HTTP, "{name: a, path: /w, protocol: tcp, send: x, expect: y}", "declares no tcp port"),
        (TCP, "{name: a, expect: PONG}", "load.requests[0].send: is required"),
        (
            TCP,
            "{name: a, send: PING, send_hex: 50}",
            "load.requests[0].send: give either 'send' or 'send_hex'",
        ),
        (TCP, "{name: a, send_hex: 5g, read: 1}", "load.requests[0].send_hex: expected hex digits"),
        (TCP, "{name: a, send: '', read: 1}", "load.requests[0].send: expected text"),
        (TCP, "{name: a, send: PING}", "load.requests[0]: on a kept connection a reply ends"),
        (TCP, "{name: a, send: PING, connection: keep}", "load.requests[0].connection: on a kept connection"),
        (TCP, "{name: a, send: PING, connection: later}", "load.requests[0].connection: must be one of keep"),
        (TCP, "{name: a, send: PING, expect: PONG, expect_hex: 50}", "give either 'expect' or 'expect_hex'"),
        (TCP, "{name: a, send: PING, expect: LONGER, read: 2}", "load.requests[0].read: is shorter than"),
        (TCP, "{name: a, send: PING, read: 1, path: /}", "load.requests[0].path: is for HTTP requests"),
        (TCP, "{name: a, send: PING, read: 1, method: GET}", "load.requests[0].method: is for HTTP requests"),
        (TCP, "{name: a, send: PING, read: 1, target: api}", "target api (go-api) declares no tcp port"),
    ],
)
def test_bad_requests_are_reported_with_their_path(load: str, request_: str, expected: str) -> None:
    assert expected in problems(load.replace("REQ", request_))


def test_hints_say_what_to_write_instead() -> None:
    found = problems(HTTP.replace("REQ", "{name: a, path: /w, send: PING}"))
    assert "hint: add protocol: tcp, or remove it (use 'path:')" in found
    found = problems(TCP.replace("REQ", "{name: a, send: PING}"))
    assert "hint: give expect: or read:, or connection: new" in found
    found = problems(GRPC.replace("REQ", "{name: a}"))
    assert "hint: package.Service/Method, e.g. method: chaoslab.work.v1.Work/Do" in found


def test_a_load_section_without_requests_says_what_to_give() -> None:
    assert "load.path: a tcp load has no path" in problems(
        "load: {protocol: tcp, target: shop, path: /, rate: 1/s}"
    )
    assert "load.requests: is required" in problems("load: {protocol: tcp, target: shop, rate: 1/s}")
    assert "load.requests: is required" in problems("load: {protocol: grpc-plain, target: shop, rate: 1/s}")
    # the go-api's own API is known: its default request is Do
    s = parse_scenario(BASE + "load: {protocol: grpc, target: api, rate: 1/s}\n")
    [req] = s.load.requests
    assert req.grpc is not None and req.grpc.method == "chaoslab.work.v1.Work/Do"


def test_target_protos_are_checked() -> None:
    bad = BASE.replace(f"protos: [{SHOP}]", "protos: [missing.proto]")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(bad + "load: {target: api, path: /w, rate: 1/s}\n")
    assert "targets.own.protos[0]:" in str(info.value) and "missing.proto is not a file" in str(info.value)


def test_grpc_and_tcp_requests_parse() -> None:
    s = parse_scenario(
        BASE
        + f"""
load:
  target: shop
  rate: 10/s
  requests:
    - {{name: price, protocol: grpc-plain, method: shop.v1.Shop/Price, message: {{sku: A1, quantity: 2}},
       proto: {SHOP}, proto_path: {VENDOR}}}
    - {{name: watch, protocol: grpc-plain, method: shop.v1.Shop/Watch, replies: 3, reflection: true}}
    - {{name: mine, protocol: grpc, target: own, method: shop.v1.Shop/Price}}
    - {{name: guess, protocol: grpc-plain, method: shop.v1.Shop/Price}}
    - {{name: ping, protocol: tcp, send: "PING\\r\\n", expect: "+PONG"}}
    - {{name: raw, protocol: tcp, send_hex: "00 01 ff", read: 4, connection: new}}
    - {{name: bye, protocol: tcp, send: "QUIT\\r\\n", connection: new}}
"""
    )
    price, watch, mine, guess, ping, raw, bye = s.load.requests
    assert price.grpc is not None and watch.grpc is not None and mine.grpc is not None
    assert price.grpc.protos == (str(SHOP),) and price.grpc.proto_path == (str(VENDOR),)
    assert json.loads(price.grpc.message) == {"sku": "A1", "quantity": 2}
    assert price.grpc.where == "load.requests[0]" and price.grpc.protos_from == "load.requests[0].proto"
    assert (watch.grpc.reflection, watch.grpc.replies, watch.grpc.message) == (True, 3, "{}")
    # a target's declared protos serve its requests; a target without any is asked by reflection
    assert (mine.grpc.protos, mine.grpc.proto_path) == ((str(SHOP),), (str(VENDOR),))
    assert mine.grpc.protos_from == "targets.own.protos"
    assert guess.grpc is not None and guess.grpc.reflection
    assert ping.tcp is not None and (ping.tcp.send, ping.tcp.expect, ping.tcp.keep) == (
        b"PING\r\n",
        b"+PONG",
        True,
    )
    assert raw.tcp is not None and (raw.tcp.send, raw.tcp.read, raw.tcp.keep) == (b"\x00\x01\xff", 4, False)
    assert bye.tcp is not None and (bye.tcp.expect, bye.tcp.read) == (b"", 0)


def test_the_cli_reports_bad_requests_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BASE + TCP.replace("REQ", "{name: a, send: PING, path: /x}") + "\n")
    res = chaoslab("validate", str(path))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "load.requests[0].path: is for HTTP requests, this one is tcp" in res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr


# --- the schema: compiled once per run, checked before any load (exit 3) ---------------------


@pytest.fixture
def schemas(tmp_path: Path) -> Iterator[Callable[[Scenario], GrpcSchemas]]:
    made = []

    def make(s: Scenario) -> GrpcSchemas:
        ctx = new_run(s, tmp_path / f"run-{len(made)}", lambda _msg: None)
        made.append(ctx)
        return GrpcSchemas(ctx)

    yield make
    for ctx in made:
        ctx.journal.close(True)


SHOP_REQ = f"proto: {SHOP}, proto_path: {VENDOR}"


def test_protos_compile_once_into_a_descriptor_set_and_requests_encode(
    schemas: Callable[[Scenario], GrpcSchemas],
) -> None:
    g = schemas(
        scenario(
            f"""[{{name: price, method: shop.v1.Shop/Price, {SHOP_REQ},
                  message: {{sku: A1, quantity: "2", at: "2026-01-02T03:04:05Z", tags: [x, y]}}}},
                 {{name: watch, method: shop.v1.Shop/Watch, replies: 3, {SHOP_REQ}}}]"""
        )
    )
    g.compile()
    price, watch = g.calls["price"], g.calls["watch"]
    assert price.descriptors == watch.descriptors  # one compilation for the same files
    assert (price.streaming, watch.streaming, watch.replies) == (False, True, 3)
    files = protos.read_set(Path(price.descriptors))
    # every import is in the set: the vendor root's and the well-known type
    assert {f.name for f in files.file} == {
        "shop.proto",
        "common/money.proto",
        "google/protobuf/timestamp.proto",
    }
    # what a Locust process builds from it: the request, serialized once
    method = protos.find_method(protos.pool_of(files), price.method)
    msg = protos.message_class(method.input_type).FromString(protos.encode(method, price.message))
    assert json_format.MessageToDict(msg) == {
        "sku": "A1",
        "quantity": 2,
        "at": "2026-01-02T03:04:05Z",
        "tags": ["x", "y"],
    }
    assert method.output_type.full_name == "common.Money"


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (
            f"{{name: a, method: shop.v1.Shop/Buy, {SHOP_REQ}}}",
            "load.requests[0].method: service shop.v1.Shop has no method Buy; "
            "its methods: Price, Watch, Upload",
        ),
        (
            f"{{name: a, method: shop.v2.Shop/Price, {SHOP_REQ}}}",
            "load.requests[0].method: no service shop.v2.Shop; services there: shop.v1.Shop",
        ),
        (
            f"{{name: a, method: shop.v1.Shop/Price, message: {{colour: red}}, {SHOP_REQ}}}",
            'load.requests[0].message: not a shop.v1.PriceRequest: Message type "shop.v1.PriceRequest" '
            'has no field named "colour"',
        ),
        (
            f"{{name: a, method: shop.v1.Shop/Price, message: {{quantity: -1}}, {SHOP_REQ}}}",
            "load.requests[0].message: not a shop.v1.PriceRequest",
        ),
        (
            f"{{name: a, method: shop.v1.Shop/Upload, {SHOP_REQ}}}",
            "load.requests[0].method: shop.v1.Shop/Upload is client streaming",
        ),
        (
            f"{{name: a, method: shop.v1.Shop/Price, replies: 2, {SHOP_REQ}}}",
            "load.requests[0].replies: shop.v1.Shop/Price is unary",
        ),
        (
            f"{{name: a, method: shop.v1.Shop/Price, proto: {SHOP}}}",
            "load.requests[0].proto: protoc could not compile shop.proto (for load.requests[0])",
        ),
        (
            f"{{name: a, method: broken.v1.B/M, proto: {DATA / 'broken.proto'}}}",
            'broken.proto:7:1: Expected ";"',
        ),
    ],
)
def test_a_request_that_does_not_fit_its_schema_is_exit_3_with_its_path(
    schemas: Callable[[Scenario], GrpcSchemas], request_: str, expected: str
) -> None:
    g = schemas(scenario(f"[{request_}]"))
    with pytest.raises(LoadError) as info:
        g.compile()
    assert expected in info.value.render()
    assert info.value.exit_code == 3 and info.value.hint


# --- reflection: against grpcio's own reflection service (v1alpha) -----------------------------


@pytest.fixture
def shop_server(tmp_path: Path) -> Iterator[SimpleNamespace]:
    """gRPC servers in the clear on 127.0.0.1 serving shop.v1.Shop/Price, each with or without
    reflection (v1alpha only, as grpcio-reflection serves it): start(reflection), port()."""
    from grpc_tools import protoc

    out = tmp_path / "shop.binpb"
    argv = [
        "protoc",
        f"-I{VENDOR}",
        f"-I{DATA}",
        f"-I{resources.files('grpc_tools') / '_proto'}",  # the well-known types
        "--include_imports",
        f"--descriptor_set_out={out}",
        str(SHOP),
    ]
    assert protoc.main(argv) == 0
    pool = protos.pool_of(protos.read_set(out))
    money = protos.message_class(pool.FindMessageTypeByName("common.Money"))
    price = grpc.unary_unary_rpc_method_handler(
        lambda _req, _ctx: money(currency="EUR", units=3),
        request_deserializer=None,
        response_serializer=money.SerializeToString,
    )
    servers = []

    def start(with_reflection: bool) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("shop.v1.Shop", {"Price": price})]
        )
        if with_reflection:
            reflection.enable_server_reflection(["shop.v1.Shop", reflection.SERVICE_NAME], server, pool=pool)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append((server, port))

    yield SimpleNamespace(start=start, port=lambda: servers[-1][1])
    for server, _ in servers:
        server.stop(None)


def _target(port: int) -> SimpleNamespace:
    return SimpleNamespace(url_for=lambda _protocol: f"127.0.0.1:{port}", ca=None)


def test_reflection_fetches_the_service_and_its_imports(
    schemas: Callable[[Scenario], GrpcSchemas], shop_server: SimpleNamespace
) -> None:
    shop_server.start(True)
    g = schemas(
        scenario(
            """[{name: price, method: shop.v1.Shop/Price, message: {sku: A1}, reflection: true},
                {name: again, method: shop.v1.Shop/Watch, replies: 2}]"""
        )
    )
    g.compile()  # nothing to compile: both ask the server
    assert g.calls == {}
    g.reflect({"shop": _target(shop_server.port())})  # type: ignore[dict-item]
    price, again = g.calls["price"], g.calls["again"]
    assert price.descriptors == again.descriptors and "reflection of grpc-plain:shop" in price.source
    files = protos.read_set(Path(price.descriptors))
    assert {f.name for f in files.file} == {
        "shop.proto",
        "common/money.proto",
        "google/protobuf/timestamp.proto",
    }
    assert (price.streaming, again.streaming) == (False, True)
    # the generic call a Locust user makes, from those descriptors alone
    method = protos.find_method(protos.pool_of(files), price.method)
    with grpc.insecure_channel(f"127.0.0.1:{shop_server.port()}") as ch:
        reply = ch.unary_unary(
            "/" + price.method, response_deserializer=protos.message_class(method.output_type).FromString
        )(protos.encode(method, price.message), timeout=5)
    assert (reply.currency, reply.units) == ("EUR", 3)


def test_reflection_problems_are_exit_3_naming_the_request(
    schemas: Callable[[Scenario], GrpcSchemas], shop_server: SimpleNamespace
) -> None:
    shop_server.start(True)
    g = schemas(scenario("[{name: a, method: shop.v1.Cart/Add, reflection: true}]"))
    with pytest.raises(LoadError) as info:
        g.reflect({"shop": _target(shop_server.port())})  # type: ignore[dict-item]
    assert "load.requests[0].method: no service shop.v1.Cart; services there: " in info.value.message
    assert (
        "shop.v1.Shop" in info.value.message and "server reflection of grpc-plain:shop" in info.value.message
    )
    shop_server.start(False)
    g = schemas(scenario("[{name: a, method: shop.v1.Shop/Price, reflection: true}]"))
    with pytest.raises(LoadError) as info:
        g.reflect({"shop": _target(shop_server.port())})  # type: ignore[dict-item]
    assert "load.requests[0]: target shop (127.0.0.1:" in info.value.message
    assert "does not answer gRPC server reflection (grpc.reflection.v1 or grpc.reflection.v1alpha)" in (
        info.value.message
    )
    assert "proto: [FILE]" in info.value.hint


# --- on real targets -----------------------------------------------------------------------


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_grpc_by_proto_file_and_by_reflection_against_the_go_api(
    scenario_run: Callable[[str], ScenarioRun],
) -> None:
    res = scenario_run("grpc_own")
    assert res.returncode == 0, story(res)
    r = res.report
    rows = {(c["phase"], c["name"]): c for c in r["requests"]}
    for phase in ("baseline", "delay"):
        for name in ("unary", "stream", "reflected"):
            row = rows[(phase, name)]
            assert row["protocol"] == "grpc" and row["requests"] >= 40 and row["errors"] == 0, row
    for name in ("unary", "stream", "reflected"):
        assert rows[("delay", name)]["p50_ms"] - rows[("baseline", name)]["p50_ms"] > 15, name
    [v] = r["verdicts"]
    assert (v["status"], v["layer"], v["target"]) == ("absorbed", "network", "api"), v["reason"]
    # one descriptor set compiled from work.proto, one fetched by reflection
    work = res.out / "work"
    said = res.stdout + res.stderr
    assert "request stream: gRPC chaoslab.work.v1.Work/Stream, server stream, from work.proto" in said
    assert (
        "request reflected: gRPC chaoslab.work.v1.Work/Do, unary, from server reflection of grpc:api" in said
    )
    assert sorted(p.name for p in work.glob("grpc-*.binpb")) == ["grpc-0.binpb", "grpc-1.binpb"]
    config = json.loads((work / "load.json").read_text())
    assert [q["grpc"]["streaming"] for q in config["requests"]] == [False, True, False]


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_an_http_mix_against_a_third_party_server(scenario_run: Callable[[str], ScenarioRun]) -> None:
    """Each HTTP request is sent as bytes built once on the user's kept connection: a GET, a POST
    with its body, a HEAD, redirects followed (a 303 turns a POST into a GET, /get answers
    nothing else; a 307 sends the POST and its body again, /post wants them), a chunked body,
    a 204 and a 304, an expected 404 all answer as the scenario says; an unexpected 500 is an
    error named by its status, and so is a chain of 31 redirects, one more than the client
    follows."""
    res = scenario_run("http_mix")
    assert res.returncode == 0, story(res)
    rows = {c["name"]: c for c in res.report["requests"] if c["phase"] == "baseline"}
    for name in (
        "get",
        "post",
        "head",
        "moved",
        "see-other",
        "again",
        "chunked",
        "no-content",
        "not-modified",
        "missing",
    ):
        assert rows[name]["requests"] >= 20 and rows[name]["errors"] == 0, rows[name]
    for name, error in (("wrong", "http-500"), ("chain", "http-too-many-redirects")):
        row = rows[name]
        assert row["requests"] >= 20 and row["errors_by_kind"] == {error: row["requests"]}, row
    # a kept connection: no connect on a request's clock past the warm-up, redirects followed
    # on it too (the same origin)
    split = {name: row["split_ms"] for name, row in rows.items()}
    for name in ("get", "post", "moved", "see-other", "again", "chunked", "no-content", "not-modified"):
        assert split[name]["connect"] == 0, split
    assert split["moved"]["wait"] > split["get"]["wait"], "a redirect followed waits for two responses"


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_tcp_request_response_against_redis(scenario_run: Callable[[str], ScenarioRun]) -> None:
    res = scenario_run("tcp_redis")
    assert res.returncode == 0, story(res)
    rows = {(c["phase"], c["name"]): c for c in res.report["requests"]}
    for phase in ("baseline", "delay"):
        for name in ("ping", "fresh"):
            assert rows[(phase, name)]["requests"] >= 40 and rows[(phase, name)]["errors"] == 0, rows
        assert rows[(phase, "wrong")]["errors_by_kind"] == {
            "tcp-unexpected-reply": rows[(phase, "wrong")]["requests"]
        }
    # kept connection: one round trip; a new connection: a handshake too, each paying the delay
    assert rows[("delay", "ping")]["p50_ms"] - rows[("baseline", "ping")]["p50_ms"] > 15
    assert rows[("delay", "fresh")]["p50_ms"] - rows[("baseline", "fresh")]["p50_ms"] > 35
    [v] = res.report["verdicts"]
    assert (v["status"], v["layer"], v["target"]) == ("absorbed", "network", "redis"), v["reason"]


def test_the_scenarios_of_these_runs_are_valid() -> None:
    for name in ("grpc_own", "tcp_redis"):
        assert chaoslab("validate", str(SCENARIOS / f"{name}.yaml")).returncode == 0


@pytest.mark.privileged
@pytest.mark.usefixtures("clean_machine")
def test_a_method_missing_from_the_protos_stops_the_run_before_any_target_starts(tmp_path: Path) -> None:
    path = tmp_path / "missing-method.yaml"
    path.write_text(
        "name: missing-method\n"
        "targets: {api: {service: go-api}}\n"
        "load: {protocol: grpc, target: api, rate: 5/s,\n"
        "       requests: [{name: a, method: chaoslab.work.v1.Work/Undo}]}\n"
        "phases: [{name: baseline, duration: 2s}]\n"
    )
    res = chaoslab("run", str(path), "--out", str(tmp_path / "out"))
    said = res.stdout + res.stderr
    assert res.returncode == 3, said
    assert (
        "load.requests[0].method: service chaoslab.work.v1.Work has no method Undo; its methods: Do, Stream"
        in (said.replace("\n", " ").replace("  ", " "))
    )
    assert "Traceback" not in said
    journal = (tmp_path / "out" / "journal.jsonl").read_text()
    assert '"kind": "process"' not in journal and '"kind": "netns"' not in journal


@pytest.mark.privileged
@pytest.mark.usefixtures("clean_machine")
def test_grpc_rate_benchmark_prints_its_rounds() -> None:
    res = subprocess.run(
        [sys.executable, str(REPO / "bench" / "grpc_rate.py"), "--rounds", "1", "--seconds", "2",
         "--users", "8", "--stream", "5"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    line = r"^round 1: +([\d.]+) calls/s, Locust process ([\d.]+) cores(, waited [\d.]+ for a CPU)?$"
    m = re.search(line, res.stdout, re.M)
    assert m is not None and float(m.group(1)) > 10, res.stdout
