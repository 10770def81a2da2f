"""The `targets:` section: what each target is, how it is reached, checked, wired and secured.

One kind per target:
- `service: NAME`: a ready-made service of chaoslab's (go-api, envoy, ...), run on the
  scenario's runtime; it is data on the same path as the kinds below;
- `program: [argv...]`: a program chaoslab starts on the local runtime (own network
  namespace and cgroup), with `env:` and `workdir:`;
- `image: TAG` or `build: DIR`: a Docker image in the local engine, or built from a
  Dockerfile context, run on the Docker runtime; `command:` overrides its CMD;
- `attach: {...}`: something already running that chaoslab neither starts nor stops.

Every kind takes `ports:` by protocol, `health:`, `tls:`, `links:` (targets it talks to),
`files:` (config templates expanded with placeholders into the run's work directory) and
`protos:` (the .proto files of its gRPC API, with `proto_path:` for their imports).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from chaoslab.quote import show
from chaoslab.scenario.fields import NAME_HINT, NAME_RE, Fields, Problems, join
from chaoslab.scenario.model import (
    PROTOCOLS,
    AttachSpec,
    HealthSpec,
    ImageSpec,
    TargetSpec,
    TlsSpec,
)
from chaoslab.scenario.requests import check_url_path, paths
from chaoslab.targets import placeholders

KINDS = ("service", "program", "image", "build", "attach")
HEALTH_PROTOCOLS = ("https", "http", "grpc", "tcp")
MAX_ARGS = 256
MAX_TEXT = 4096  # one argument, one environment value
# Each started target gets a /30 of the run's /24 for its link to the host, and each link
# between two targets one of another /24 (the local runtime): 64 of each fit.
MAX_TARGETS = 64
MAX_LINKS = 64
ENV_NAME_HINT = "letters, digits and '_', not starting with a digit"


def parse_targets(top: Fields, problems: Problems, base: Path, runtime: str) -> dict[str, TargetSpec]:
    """Every target of the scenario; `base` is the scenario's directory (relative paths)."""
    from chaoslab.targets.builtins import BUILTINS

    out: dict[str, TargetSpec] = {}
    raw = top.mapping("targets", required=True)
    if len(raw) > MAX_TARGETS:
        problems.add("targets", f"at most {MAX_TARGETS} targets, got {len(raw)}", "split the scenario")
        raw = dict(list(raw.items())[:MAX_TARGETS])
    for name, value in raw.items():
        f = Fields(value, join("targets", name), problems)
        valid_name = bool(NAME_RE.match(name))
        if not valid_name:
            problems.add(f.path, f"{show(name)} is not a valid target name", NAME_HINT)
        kinds = [k for k in KINDS if f.has(k)]
        if f.ok and len(kinds) != 1:
            problems.add(
                f.path,
                "says what it is in more than one way: " + ", ".join(kinds)
                if kinds
                else "does not say what it is",
                "give one of: service (chaoslab's go-api or envoy), program, image or build, attach",
            )
            f.finish()
            continue
        kind = kinds[0] if kinds else ""
        spec: TargetSpec | None = None
        if kind == "service":
            service = f.choice("service", tuple(BUILTINS), "", required=True)
            if service:
                spec = BUILTINS[service].parse(f, name, base)
        elif kind:
            spec = _user_target(f, name, kind, base)
        f.finish()
        if spec is not None and valid_name:
            out[name] = spec
    parsed = dict(out)
    for name, spec in parsed.items():
        if spec.kind == "service":
            out[name] = BUILTINS[spec.service].complete(spec, parsed)
    _check_relations(out, problems, runtime)
    if raw and not out and not problems:
        problems.add("targets", "no valid target")
    return out


def _user_target(f: Fields, name: str, kind: str, base: Path) -> TargetSpec:
    p = f.problems
    argv: tuple[str, ...] = ()
    image = attach = None
    if kind == "program":
        argv = _argv(f, "program", required=True)
    elif kind in ("image", "build"):
        tag = f.string("image")
        context = _path(f, "build", base) if f.has("build") else ""
        dockerfile = f.string("dockerfile", "Dockerfile")
        if context and not (Path(context) / dockerfile).is_file():
            p.add(
                f.at("build"), f"no {dockerfile} in {context}", "give the directory that holds the Dockerfile"
            )
        image = ImageSpec(tag=tag, build=context, dockerfile=dockerfile)
        argv = _argv(f, "command")
    else:
        attach = _attach(f)
    env = _env(f)
    workdir = _path(f, "workdir", base) if f.has("workdir") else ""
    if workdir and not Path(workdir).is_dir():
        p.add(f.at("workdir"), f"{workdir} is not a directory")
    if kind == "program" and argv:
        argv = (_executable(f, argv[0], Path(workdir) if workdir else base), *argv[1:])
    ports = _ports(f, required=True)
    health = _health(f, dict(ports))
    tls = _tls(f, base)
    links = tuple(_names(f, "links"))
    files = _files(f, base)
    proxy = f.flag("proxy")
    control = tuple(_port_list(f, "control_ports"))
    address = f.string("address") if kind == "attach" else ""
    protos = tuple(paths(f, "protos", base, directory=False))
    proto_path = tuple(paths(f, "proto_path", base, directory=True))
    if proto_path and not protos:
        p.add(f.at("proto_path"), "is for the imports of the files under 'protos:'", "give protos: [FILE]")
    spec = TargetSpec(
        name=name,
        kind="image" if kind == "build" else kind,
        argv=argv,
        env=env,
        workdir=workdir,
        image=image,
        attach=attach,
        ports=ports,
        health=health,
        tls=tls,
        links=links,
        files=files,
        proxy=proxy,
        control_ports=control,
        address=address,
        protos=protos,
        proto_path=proto_path,
    )
    _check_placeholders(f, spec)
    return spec


def _argv(f: Fields, key: str, *, required: bool = False) -> tuple[str, ...]:
    """A command line: text arguments (numbers are written as text), bounded in count and size."""
    present = f.has(key)
    items = f.sequence(key, required=required)
    if required and present and not items:
        f.problems.add(
            f.at(key), "needs at least the program to run", f"e.g. {key}: [./server, --port, '80']"
        )
    out = []
    for i, item in enumerate(items[:MAX_ARGS]):
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            f.problems.add(join(f.at(key), i), f"expected text, got {type(item).__name__}")
            continue
        text = str(item)
        if len(text) > MAX_TEXT or "\x00" in text:
            f.problems.add(join(f.at(key), i), f"at most {MAX_TEXT} characters and no NUL")
            continue
        out.append(text)
    if len(items) > MAX_ARGS:
        f.problems.add(f.at(key), f"at most {MAX_ARGS} arguments")
    return tuple(out)


def _executable(f: Fields, argv0: str, base: Path) -> str:
    """The program's absolute path: a path (relative to its workdir, or to the scenario's
    directory), or a name found on PATH; a problem when it is not an executable file."""
    if "{" in argv0:  # a placeholder, e.g. {bin.go-api}: resolved when it starts
        return argv0
    if "/" in argv0:
        # absolute, symlinks kept: a program may read its own name (redis-server is a link)
        path = Path(os.path.abspath(base / argv0))
    else:
        found = shutil.which(argv0)
        if found is None:
            f.problems.add(
                join(f.at("program"), 0), f"{show(argv0)} is not on PATH", "give its path, or install it"
            )
            return argv0
        path = Path(found)
    if not path.is_file():
        f.problems.add(join(f.at("program"), 0), f"{path} does not exist", "build it first, or fix the path")
    elif not os.access(path, os.X_OK):
        f.problems.add(join(f.at("program"), 0), f"{path} is not executable", f"chmod +x {path}")
    return str(path)


def _env(f: Fields) -> tuple[tuple[str, str], ...]:
    out = []
    for key, value in f.mapping("env").items():
        if not key.replace("_", "a").isalnum() or key[:1].isdigit() or not key.isascii():
            f.problems.add(join(f.at("env"), key), "is not an environment variable name", ENV_NAME_HINT)
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            f.problems.add(join(f.at("env"), key), f"expected text, got {type(value).__name__}")
            continue
        text = str(value)
        if len(text) > MAX_TEXT or "\x00" in text:
            f.problems.add(join(f.at("env"), key), f"at most {MAX_TEXT} characters and no NUL")
            continue
        out.append((key, text))
    return tuple(out)


def _path(f: Fields, key: str, base: Path) -> str:
    raw = f.string(key, required=True)
    return str((base / raw).resolve()) if raw else ""


def _port_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"expected a port between 1 and 65535, got {show(value)}")
    return value


def _ports(f: Fields, *, required: bool) -> tuple[tuple[str, int], ...]:
    raw = f.mapping("ports", required=required)
    out = []
    for proto, value in raw.items():
        path = join(f.at("ports"), proto)
        if proto not in PROTOCOLS:
            f.problems.add(path, f"unknown protocol {show(proto)}", f"protocols: {', '.join(PROTOCOLS)}")
            continue
        try:
            out.append((proto, _port_number(value)))
        except ValueError as exc:
            f.problems.add(path, str(exc))
    return tuple(out)


def _port_list(f: Fields, key: str) -> list[int]:
    out = []
    for i, value in enumerate(f.sequence(key)):
        try:
            out.append(_port_number(value))
        except ValueError as exc:
            f.problems.add(join(f.at(key), i), str(exc))
    return out


def _health(f: Fields, ports: dict[str, int]) -> HealthSpec:
    """`health: {https: /healthz}`, `{http: /ready, status: 204}`, `{grpc: SERVICE}`, `{tcp: PORT}`
    (or `{tcp: true}`: its first port), or `none`; `timeout:` to become healthy (default 30 s).
    Default: a TCP connect to its first port."""
    first = next(iter(ports.values()), 0)
    if not f.has("health"):
        return HealthSpec("tcp", port=first) if first else HealthSpec("none")
    raw = f.raw.get("health")
    if raw == "none":
        f.get("health", str, "")
        return HealthSpec("none")
    h = Fields(f.mapping("health"), f.at("health"), f.problems)
    given = [p for p in HEALTH_PROTOCOLS if h.has(p)]
    if h.ok and len(given) != 1:
        h.problems.add(
            h.path,
            "give one way to check it",
            "e.g. {https: /healthz}, {grpc: ''}, {tcp: 6379} or health: none",
        )
    timeout = h.duration("timeout", 30.0)
    if timeout > 600:
        h.problems.add(h.at("timeout"), f"at most 600s, got {timeout:g}s")
    out = HealthSpec("none")
    if given:
        proto = given[0]
        if proto in ("https", "http"):
            path = h.string(proto, required=True)
            if path:
                check_url_path(path, h.at(proto), h.problems, "e.g. /healthz")
            status = h.integer("status", 200, low=100, high=599)
            out = HealthSpec(proto, path=path, status=status, port=ports.get(proto, 0), timeout=timeout)
        elif proto == "grpc":
            service = h.get("grpc", _grpc_service, "")
            out = HealthSpec("grpc", service=service, port=ports.get("grpc", 0), timeout=timeout)
        else:
            value = h.raw.get("tcp")
            port = first if value is True else h.get("tcp", _port_number, 0)
            if value is True:
                h.get("tcp", bool, True)
            out = HealthSpec("tcp", port=port, timeout=timeout)
        if out.port == 0 and h.ok:
            h.problems.add(
                h.at(proto), f"the target declares no {proto} port", f"add ports: {{{proto}: PORT}}"
            )
    h.finish()
    return out


def _grpc_service(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a gRPC service name ('' for the server as a whole), got {show(value)}")
    if len(value) > 200 or not value.isascii() or not value.isprintable():
        raise ValueError(f"{show(value)} is not a gRPC service name (printable ASCII, at most 200)")
    return value


def _tls(f: Fields, base: Path) -> TlsSpec:
    """`tls: {ca: FILE}` (the target serves its own certificate) or `{verify: false}`; default:
    chaoslab's run CA, with a certificate for the target handed to it as {cert} and {key}."""
    if not f.has("tls"):
        return TlsSpec()
    t = Fields(f.mapping("tls"), f.at("tls"), f.problems)
    ca = _path(t, "ca", base) if t.has("ca") else ""
    if ca and not Path(ca).is_file():
        t.problems.add(
            t.at("ca"), f"{ca} is not a file", "give the PEM file of the CA that signed its certificate"
        )
    verify = t.flag("verify", True)
    if ca and not verify:
        t.problems.add(t.at("verify"), "a CA is given: the load verifies with it", "give ca or verify: false")
    t.finish()
    return TlsSpec(ca=ca, verify=verify)


def _attach(f: Fields) -> AttachSpec:
    a = Fields(f.mapping("attach", required=True), f.at("attach"), f.problems)
    pid = a.integer("pid", 0, low=1, high=4_194_304)
    process = a.string("process")
    port = a.get("port", _port_number, 0)
    container = a.string("container")
    labels = tuple(_labels(a))
    compose = Fields(a.mapping("compose"), a.at("compose"), a.problems) if a.has("compose") else None
    if compose is not None:
        project, service = compose.string("project", required=True), compose.string("service", required=True)
        compose.finish()
        labels += (("com.docker.compose.project", project), ("com.docker.compose.service", service))
    ways = [w for w, v in (("pid", pid), ("process", process), ("port", port)) if v]
    in_docker = bool(container or labels)
    if a.ok and len(ways) + in_docker != 1:
        a.problems.add(
            a.path,
            "select it one way",
            "one of: pid, process (its name), port (it listens on), container (name or id), labels, compose",
        )
    a.finish()
    return AttachSpec(pid=pid, process=process, port=port, container=container, labels=labels)


def _labels(a: Fields) -> list[tuple[str, str]]:
    out = []
    for key, value in a.mapping("labels").items():
        where = join(a.at("labels"), key)
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            a.problems.add(where, f"expected text, got {type(value).__name__}")
        elif not key.isprintable() or not str(value).isprintable() or len(key) + len(str(value)) > 1024:
            a.problems.add(where, "a label is printable text of at most 1024 characters")
        else:
            out.append((key, str(value)))
    return out


def _names(f: Fields, key: str) -> list[str]:
    out = []
    for i, item in enumerate(f.sequence(key)):
        if not isinstance(item, str) or not NAME_RE.match(item):
            f.problems.add(join(f.at(key), i), f"{show(item)} is not a target name", NAME_HINT)
            continue
        out.append(item)
    return out


def _files(f: Fields, base: Path) -> tuple[tuple[str, str], ...]:
    out = []
    for key, value in f.mapping("files").items():
        path = join(f.at("files"), key)
        if not NAME_RE.match(key):
            f.problems.add(path, f"{show(key)} is not a file name here", NAME_HINT)
            continue
        if not isinstance(value, str):
            f.problems.add(path, f"expected the path of a template, got {type(value).__name__}")
            continue
        full = (base / value).resolve()
        if not full.is_file():
            f.problems.add(path, f"{full} is not a file")
            continue
        if full.stat().st_size > placeholders.MAX_TEXT:
            f.problems.add(
                path, f"{full} is over {placeholders.MAX_TEXT} bytes: a config template is smaller"
            )
            continue
        out.append((key, str(full)))
    return tuple(out)


def known_placeholders(spec: TargetSpec, linked: dict[str, TargetSpec]) -> set[str]:
    """The placeholder names `spec` may use (its links' addresses are known only for its links)."""
    names = {"cert", "key", "ca", "workdir", "name", *(f"ports.{p}" for p, _ in spec.ports)}
    names |= {f"files.{n}" for n, _ in spec.files}
    from chaoslab.targets.builtins import BUILTINS

    names |= {f"bin.{b}" for b in BUILTINS}
    for t in linked.values():
        names |= {f"targets.{t.name}.host", *(f"targets.{t.name}.ports.{p}" for p, _ in t.ports)}
    return names


def _check_placeholders(f: Fields, spec: TargetSpec) -> None:
    """What can be checked alone; links are checked once every target is known."""
    for i, arg in enumerate(spec.argv):
        for problem in placeholders.check(arg, _all_but_targets(spec)):
            if "targets." not in problem:
                f.problems.add(join(f.at("program" if spec.kind == "program" else "command"), i), problem)


def _all_but_targets(spec: TargetSpec) -> set[str]:
    return known_placeholders(spec, {}) | {
        n for arg in spec.argv for n in _safe_names(arg) if n.startswith("targets.")
    }


def _safe_names(text: str) -> list[str]:
    try:
        return placeholders.names(text)
    except placeholders.PlaceholderError:
        return []


def _check_relations(out: dict[str, TargetSpec], problems: Problems, runtime: str) -> None:
    links = {tuple(sorted((t.name, other))) for t in out.values() for other in t.links if other in out}
    if len(links) > MAX_LINKS:
        problems.add("targets", f"at most {MAX_LINKS} links between targets, got {len(links)}")
    for spec in out.values():
        base = join("targets", spec.name)
        for i, link in enumerate(spec.links):
            # a built-in links through its own options (envoy: upstream), which the user wrote
            where = (
                f"{base}.{spec.link_paths[i]}"
                if spec.kind == "service" and i < len(spec.link_paths)
                else join(join(base, "links"), i)
            )
            if link == spec.name:
                problems.add(where, "a target cannot depend on itself")
            elif link not in out:
                problems.add(where, f"unknown target {show(link)}", _known(out))
        if spec.kind == "service":
            from chaoslab.targets.builtins import BUILTINS

            BUILTINS[spec.service].check(spec, out, problems)
        linked = {n: out[n] for n in spec.links if n in out}
        known = known_placeholders(spec, linked)
        texts = [(join(base, "program" if spec.kind == "program" else "command"), spec.argv)]
        texts.append((join(base, "env"), tuple(v for _, v in spec.env)))
        for path, values in texts:
            for i, text in enumerate(values):
                for problem in placeholders.check(text, known):
                    if "targets." in problem:
                        problems.add(
                            join(path, i) if path.endswith(("program", "command")) else path,
                            problem,
                            "a target's address is known to the targets that list it under links",
                        )
                    elif path.endswith("env"):
                        problems.add(path, problem, "see the README's placeholders")
        for fname, fpath in spec.files:
            if not fpath:  # written by a built-in at launch
                continue
            text = Path(fpath).read_text(errors="replace")
            # a built-in's file is an option of its own (envoy: bootstrap)
            where = join(base, fname) if spec.kind == "service" else join(join(base, "files"), fname)
            for problem in placeholders.check(text, known, strict=False):
                problems.add(where, f"{fpath}: {problem}")
        if spec.kind == "program" and runtime == "docker":
            problems.add(
                base,
                "a program target runs on the local runtime",
                "use runtime: local, or build it into an image (image: or build:)",
            )
        if spec.kind == "image" and runtime == "local":
            problems.add(base, "an image target runs on the Docker runtime", "use runtime: docker (or auto)")
    _check_cycles(out, problems)


def _check_cycles(out: dict[str, TargetSpec], problems: Problems) -> None:
    """Links form no cycle: a target starts after the targets it talks to."""
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2 or name not in out:
            return
        if state.get(name) == 1:
            cycle = [*trail[trail.index(name) :], name]
            problems.add(
                join("targets", name),
                f"targets depend on each other in a cycle: {' -> '.join(cycle)}",
                "a target starts after the targets it links to: remove one link of the cycle",
            )
            return
        state[name] = 1
        for link in out[name].depends():
            visit(link, [*trail, name])
        state[name] = 2

    for name in out:
        visit(name, [])


def _known(targets: dict[str, TargetSpec]) -> str:
    return f"targets are: {', '.join(targets)}" if targets else "define it under 'targets:'"
