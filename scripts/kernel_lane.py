#!/usr/bin/env python3
"""The kernel matrix lane: run chaoslab on the kernels users have, under QEMU, here.

Debian's kernel packages are fetched from Debian's registry (`apt-get download`), and each
boots under QEMU (emulated: `-accel tcg`) with this machine's root file system shared
read-only into the guest over 9p and the project's checkout shared read-write at the same
path. The guest's init (busybox) loads the modules 9p needs, mounts the host's root, gives
it fresh proc, sys, dev, tracefs, bpffs, cgroup2 (cgroup v2 only, with no controller
enabled below the root, as on a minimal host), and tmpfs on /tmp, /run and Docker's
directories, chroots into it and runs one job script. Module autoloading works: the
kernel's modprobe helper chroots into the host root, where the kernel's own modules are
mounted at /lib/modules. The job's exit code and output come back through the checkout.

    python3 scripts/kernel_lane.py prepare 6.1 6.12     # fetch, extract, build initramfs
    python3 scripts/kernel_lane.py run 6.1 -- CMD ARGS   # boot, run CMD in the checkout, exit with its code
    python3 scripts/kernel_lane.py test 6.1 [PYTEST ARGS]  # the lane's tests (marker kernel_lane)

Needs root and the Debian packages qemu-system-x86, busybox-static, cpio, kmod, xz-utils.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LANE = ROOT / ".build" / "kernel-lane"

# Debian's kernel packages by short name: 6.1 is Debian 12's default, 6.12 its newer kernel
# (and Debian 13's default).
KERNELS = {
    "6.1": "linux-image-6.1.0-57-amd64",
    "6.12": "linux-image-6.12.100+deb12-amd64",
}
# Modules the guest needs before it can mount anything over 9p, in load order (6.12 has
# virtio built in; a module that is built in is simply not found and skipped).
BOOT_MODULES = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "fs/netfs/netfs.ko",
    "fs/fscache/fscache.ko",
    "net/9p/9pnet.ko",
    "net/9p/9pnet_virtio.ko",
    "fs/9p/9p.ko",
]
BUSYBOX = Path("/bin/busybox")
MEMORY_MB = 6144
BOOT_TIMEOUT = 120

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.list); do insmod "/modules/$m" || echo "lane: insmod $m failed"; done
opts=trans=virtio,version=9p2000.L,msize=524288
mount -t 9p -o $opts,ro,cache=loose hostroot /mnt || { echo "lane: cannot mount the host root"; poweroff -f; }
mount -t 9p -o $opts,ro,cache=loose modules /mnt/lib/modules
mount -t 9p -o $opts checkout /mnt@CHECKOUT@
mount -t proc proc /mnt/proc
mount -t sysfs sys /mnt/sys
mount -t devtmpfs dev /mnt/dev
mkdir -p /mnt/dev/pts /mnt/dev/shm
mount -t devpts devpts /mnt/dev/pts
mount -t tmpfs tmpfs /mnt/dev/shm
mount -t tracefs tracefs /mnt/sys/kernel/tracing
mount -t debugfs debugfs /mnt/sys/kernel/debug
mount -t bpf bpf /mnt/sys/fs/bpf
mount -t cgroup2 cgroup2 /mnt/sys/fs/cgroup
for d in /tmp /run /var/lib/docker /var/lib/containerd /var/log; do
  [ -d "/mnt$d" ] && mount -t tmpfs tmpfs "/mnt$d"
done
printf '#!/bin/sh\nexec chroot /mnt /sbin/modprobe "$@"\n' > /sbin/modprobe-host
chmod +x /sbin/modprobe-host
echo /sbin/modprobe-host > /proc/sys/kernel/modprobe
ip link set lo up 2>/dev/null
echo
chroot /mnt /bin/sh -c "ip link set lo up; cd @CHECKOUT@ && exec /bin/sh @JOB@" \
  </dev/console >/dev/console 2>&1
echo "$?" > /mnt@RESULT@
sync
poweroff -f
"""


def sh(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, text=True, **kw)  # type: ignore[call-overload]


def version_of(package: str) -> str:
    return package.removeprefix("linux-image-")


def kernel_dir(short: str) -> Path:
    return LANE / version_of(KERNELS[short])


def prepare(short: str) -> Path:
    """Fetch and extract the kernel package, run depmod, build the initramfs (idempotent)."""
    package = KERNELS[short]
    version = version_of(package)
    kdir = kernel_dir(short)
    initrd = kdir / "initramfs.cpio.gz"
    if initrd.exists() and (kdir / "vmlinuz").exists():
        return kdir
    kdir.mkdir(parents=True, exist_ok=True)
    debs = list(kdir.glob(f"{package}_*.deb"))
    if not debs:
        print(f"lane: fetching {package} from Debian's registry", flush=True)
        sh(["apt-get", "download", package], cwd=kdir, capture_output=True)
        debs = list(kdir.glob(f"{package}_*.deb"))
    tree = kdir / "tree"
    if not tree.exists():
        sh(["dpkg-deb", "-x", str(debs[0]), str(tree)])
        sh(["depmod", "-b", str(tree), version])
    shutil.copy(tree / "boot" / f"vmlinuz-{version}", kdir / "vmlinuz")
    # Modules come as .ko or .ko.xz: the initramfs gets the boot modules uncompressed.
    staging = kdir / "initramfs"
    shutil.rmtree(staging, ignore_errors=True)
    for d in ("bin", "sbin", "proc", "sys", "dev", "mnt", "modules", "tmp"):
        (staging / d).mkdir(parents=True)
    shutil.copy(BUSYBOX, staging / "bin" / "busybox")
    order = []
    mods = tree / "lib" / "modules" / version / "kernel"
    for rel in BOOT_MODULES:
        src = mods / rel
        if src.exists():
            shutil.copy(src, staging / "modules" / src.name)
        elif src.with_suffix(".ko.xz").exists():
            out = staging / "modules" / src.name
            with out.open("wb") as fh:
                sh(["xz", "-dc", str(src.with_suffix(".ko.xz"))], stdout=fh)
        else:
            continue  # built into this kernel
        order.append(src.name)
    (staging / "modules.list").write_text("\n".join(order) + "\n")
    with initrd.open("wb") as fh:
        find = subprocess.Popen(["find", "."], cwd=staging, stdout=subprocess.PIPE)
        cpio = subprocess.Popen(
            ["cpio", "-o", "-H", "newc", "--quiet"], cwd=staging, stdin=find.stdout, stdout=subprocess.PIPE
        )
        sh(["gzip", "-1"], stdin=cpio.stdout, stdout=fh)
        find.wait()
        cpio.wait()
    return kdir


@dataclass(frozen=True)
class Boot:
    rc: int
    crash: str  # the first line of the guest kernel's crash report, if it crashed


# What the guest kernel prints when it crashes or locks up (softlockup_panic turns a lockup
# into a panic, and panic=-1 with -no-reboot ends QEMU).
CRASH_SIGNS = ("Kernel panic", "BUG: soft lockup", "Oops:", "rcu_sched self-detected stall", "watchdog: BUG")


def boot(short: str, command: list[str], timeout: float, log: Path, number: int = 1) -> Boot:
    """Boot the kernel, run `command` in the checkout inside the guest; returns its exit code.

    `number` counts the boots of one lane: the job sees it as CHAOSLAB_LANE_BOOT."""
    kdir = prepare(short)
    version = version_of(KERNELS[short])
    run_dir = kdir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    job, result = run_dir / "job.sh", run_dir / "rc"
    env_lines = [
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin",
        "export HOME=/tmp CHAOSLAB_KERNEL_LANE=1 PYTHONDONTWRITEBYTECODE=1",
        f"export CHAOSLAB_LANE_KERNEL={shlex.quote(short)} CHAOSLAB_LANE_BOOT={number}",
        # the BPF statistics on for the whole of a probe set's life, not flipped every few
        # seconds: each flip live-patches kernel text, which QEMU's TCG races on (soft lockups
        # of both vCPUs in the entropy scenario on 6.1 when they were sampled)
        "export CHAOSLAB_BPF_STATS=always",
        # a lane test that only runs when asked (tests/test_kernel_lane.py says which)
        *(f"export {k}={shlex.quote(v)}" for k, v in os.environ.items() if k == "CHAOSLAB_LANE_REMOTE"),
    ]
    job.write_text("\n".join([*env_lines, "exec " + shlex.join(command), ""]))
    init = kdir / "initramfs" / "init"
    init.write_text(
        INIT.replace("@CHECKOUT@", str(ROOT)).replace("@JOB@", str(job)).replace("@RESULT@", str(result))
    )
    init.chmod(0o755)
    initrd = run_dir / "initramfs.cpio.gz"
    with initrd.open("wb") as fh:
        find = subprocess.Popen(["find", "."], cwd=kdir / "initramfs", stdout=subprocess.PIPE)
        cpio = subprocess.Popen(
            ["cpio", "-o", "-H", "newc", "--quiet"],
            cwd=kdir / "initramfs",
            stdin=find.stdout,
            stdout=subprocess.PIPE,
        )
        sh(["gzip", "-1"], stdin=cpio.stdout, stdout=fh)
        find.wait()
        cpio.wait()
    modules = kdir / "tree" / "lib" / "modules"
    Path("/lib/modules").mkdir(exist_ok=True)  # the guest mounts its modules over this (empty) dir
    cpus = max(1, min(2, os.cpu_count() or 1))
    argv = [
        "qemu-system-x86_64",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        str(cpus),
        "-m",
        str(MEMORY_MB),
        "-kernel",
        str(kdir / "vmlinuz"),
        "-initrd",
        str(initrd),
        "-append",
        "console=ttyS0 panic=-1 softlockup_panic=1 quiet loglevel=3 rdinit=/init",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={modules},mount_tag=modules,security_model=none,readonly=on",
        "-virtfs",
        f"local,path={ROOT},mount_tag=checkout,security_model=none",
    ]
    started = time.monotonic()
    print(
        f"lane: booting Debian's {version} under QEMU (tcg, {cpus} vCPUs): {shlex.join(command)}", flush=True
    )
    crash = ""
    with log.open("w") as console:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert proc.stdout is not None
        # A guest that hangs may print nothing more: the deadline kills QEMU from a timer,
        # not from the loop that reads its console.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            proc.kill()

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            for raw in proc.stdout:
                line = raw.decode(errors="replace")
                console.write(line)
                sys.stdout.write(line)
                if not crash and any(s in line for s in CRASH_SIGNS):
                    crash = line.strip()
            proc.wait()
        finally:
            timer.cancel()
    timed_out = expired.is_set()
    took = time.monotonic() - started
    if timed_out:
        print(f"lane: the guest did not finish in {timeout:.0f}s; killed", flush=True)
        return Boot(124, crash or "no output: the guest hung")
    rc = int(result.read_text().strip()) if result.exists() else 125
    print(f"lane: {version}: exit {rc} after {took:.0f}s (log {log})", flush=True)
    return Boot(rc, crash)


MAX_BOOTS = 4  # a crash early in a boot costs a minute or two; the job's budget bounds them all


def test_lanes(kernels: list[str], command: list[str], timeout: float, budget: float) -> int:
    """Each kernel's lane; a guest whose kernel crashed boots again, up to MAX_BOOTS in all,
    if the budget allows, and goes on from the test it was in: the tests that passed are
    written down as they pass (CHAOSLAB_LANE_PASSED) and left out of the next boot.

    QEMU's TCG emulates two vCPUs with a thread each, and x86 cross-modifying code (the
    kernel patches its own text whenever a static key, a tracepoint or a trampoline is
    switched) is not always coherent between them: a guest has died with a torn jump in
    enqueue_entity, with an int3 left in sched_clock_cpu during boot or in __schedule when a
    tracepoint was switched on, or with both vCPUs in soft lockup, on runs whose next boot
    passed.

    The emulated guest's timing is noisy too: a baseline's median has come out 40 ms slower
    than the phases after it (237 ms against 189-201 ms at rest), hiding a 40 ms network
    delay that the network layer measured in full (+42 ms a request). So the tests that fail
    in a boot run once more, alone, in the next one (the guest writes failures down as they
    happen, in a boot that crashes too); a test that fails twice fails the lane, and one that
    passed on its second run is named at the end. A guest that crashes MAX_BOOTS times fails
    the lane. Each boot's console is kept in its own log."""
    end = time.monotonic() + budget
    failed: list[str] = []
    second_tries: list[str] = []
    for k in kernels:
        results = ROOT / "reports" / "kernel-lane" / version_of(KERNELS[k])
        shutil.rmtree(results, ignore_errors=True)
        failures, retried = results / "failed.txt", False
        for number in range(1, MAX_BOOTS + 1):
            left = end - time.monotonic()
            if left < 120:
                print(f"lane: {k}: {left:.0f}s of the budget left, not enough to boot", flush=True)
                failed.append(k)
                break
            got = boot(k, command, min(timeout, left), LANE / f"{k}-boot{number}.log", number)
            if got.rc == 0:
                break
            tests = failures.read_text().split() if failures.exists() else []
            if number == MAX_BOOTS or (tests and retried) or not (tests or got.crash):
                print(f"lane: {k}: failed: {tests or got.crash or f'exit {got.rc}'}", flush=True)
                failed.append(k)
                break
            if tests:
                retried = True
                second_tries += [f"{k}: {t}" for t in tests]
                failures.rename(failures.with_name(f"failed-boot{number}.txt"))
                said = f"lane: {k}: failed in boot {number}: {tests}; they run again, in a new boot"
                print(said, flush=True)
            else:
                print(
                    f"lane: {k}: the guest kernel crashed ({got.crash}); booting it again, "
                    "without the tests that passed",
                    flush=True,
                )
    if second_tries and not failed:
        print(f"lane: passed on a second run (flaky in the emulated guest): {second_tries}", flush=True)
    print(f"lane: {'failed: ' + ', '.join(failed) if failed else 'every kernel passed'}", flush=True)
    return 1 if failed else 0


# Rows of the table: (label, how to find the cell in a kernel's results)
FAULT_ROWS = [
    ("network delay", "network", "net-delay", "network"),
    ("syscall delay", "syscall", "slow-write", "syscall"),
    ("cpu limit", "cpu", "cpu-limit", "cpu"),
    ("pause (freeze)", "process", "paused", "cpu"),
]
LAYER_ROWS = ["proxy", "network", "app", "tls", "gc", "entropy", "syscall", "cpu"]


def _results(release: str) -> dict[str, object] | None:
    path = ROOT / "reports" / "kernel-lane" / release / "results.json"
    return json.loads(path.read_text()) if path.exists() else None


def _host_column() -> dict[str, str]:
    """This machine's mechanisms (its own tests verify them: tests/test_matrix.py and friends)."""
    exe = str(ROOT / ".venv" / "bin" / "chaoslab")
    probes = json.loads(subprocess.run([exe, "probes", "--json"], capture_output=True, text=True).stdout)
    cells = {}
    for row in probes["layers"]:
        ways = ", ".join(f"{h}: {w}" for h, w in row["ways"].items()) or _short(row["mechanism"])
        key = f"layer {row['layer']}"
        cells[key] = f"{cells[key]}; or {ways}" if key in cells else ways  # e.g. app: Go's, or any server's
    for scenario in ("faults.yaml", "entropy.yaml"):
        plan = subprocess.run(
            [exe, "plan", str(ROOT / "tests" / "lane" / scenario)], capture_output=True, text=True
        )
        kind = ""
        for line in plan.stdout.splitlines():
            if line.startswith("  ") and " on api (phases[" in line:
                kind = line.split()[0]
            elif line.strip().startswith("mechanism:") and kind:
                cells[f"fault {kind}"] = _short(line.split(":", 1)[1])
    return cells


def _short(mechanism: str) -> str:
    """A mechanism's name without its details."""
    return mechanism.split(";")[0].split(" (")[0].split(", filtered")[0].strip()


def _verdict(v: dict[str, object], ok: bool) -> str:
    explained = v.get("explained")
    share = f" {explained:.0%}" if isinstance(explained, float | int) else ""
    return f"{v.get('layer')}{share} {'✓' if ok else '✗'}"


def table() -> str:
    """The README's supported-kernels table, from the lane's results and this machine's probes."""
    columns = [(short, version_of(pkg)) for short, pkg in KERNELS.items()]
    results = {short: _results(release) for short, release in columns}
    host = _host_column()
    head = [f"{short} ({release}), cgroup v2" for short, release in columns]
    head.append(f"this machine ({os.uname().release}), cgroup v1: the main suite")
    lines = ["| | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]

    def lane_cell(res: dict | None, text: str, ok: bool) -> str:
        if res is None:
            return "not run"
        return f"{text} ✓" if ok else f"{text} ✗"

    for layer in LAYER_ROWS:
        cells = []
        for short, _ in columns:
            res = results[short]
            probes = (res or {}).get("probes", {})
            row = probes.get(layer) if isinstance(probes, dict) else None
            ways = ", ".join(f"{h}: {w}" for h, w in (row or {}).get("ways", {}).items())
            text = ways or ("attaches" if row else "not attached")
            cells.append(lane_cell(res, text, row is not None))
        cells.append(host.get(f"layer {layer}", "?"))
        lines.append(f"| layer `{layer}` | " + " | ".join(cells) + " |")
    for label, kind, phase, layer in FAULT_ROWS:
        cells = []
        for short, _ in columns:
            res = results[short] or {}
            parts = []
            for runtime in ("local", "docker"):
                run = res.get(f"faults-{runtime}")
                if not isinstance(run, dict):
                    parts.append(f"{runtime}: not run")
                    continue
                v = run["verdicts"].get(phase, {})
                mech = _short(run["mechanisms"].get(f"fault {kind}", "?"))
                # as the lane's test judges: absorbed by the fault's layer, or inconclusive with
                # that layer among the phase's causes (an emulated guest slowed all around it)
                cause = [layer, "api"] in v.get("causes", [])
                if v.get("status") == "inconclusive" and cause:
                    parts.append(f"{runtime}: {mech}, inconclusive, {layer} a cause ✓")
                    continue
                ok = (v.get("status"), v.get("layer")) == ("absorbed", layer)
                parts.append(f"{runtime}: {mech}, {_verdict(v, ok)}")
            cells.append("<br>".join(parts) if results[short] else "not run")
        cells.append(host.get(f"fault {kind}", "?"))
        lines.append(f"| fault `{label}` | " + " | ".join(cells) + " |")
    cells = []
    for short, _ in columns:
        res = results[short] or {}
        e = res.get("entropy")
        if not isinstance(e, dict):
            cells.append("not run")
            continue
        v = e["verdicts"].get("starve", {})
        ok = (v.get("status"), v.get("layer")) == ("absorbed", "entropy")
        cells.append(f"{_short(e['mechanisms'].get('fault entropy', '?'))}, {_verdict(v, ok)}")
    cells.append(host.get("fault entropy", "?"))
    lines.append("| fault `entropy` (tls_entropy, default probes) | " + " | ".join(cells) + " |")
    cells = [
        (
            "exit 3, one line with its fix ✓"
            if isinstance((results[s] or {}).get("missing_module"), dict)
            else "not run"
        )
        for s, _ in columns
    ]
    lines.append("| a kernel module missing (veth) | " + " | ".join(cells) + " | (veth built in) |")
    return "\n".join(lines)


# The lane's job in the guest: a Docker engine of its own (data on tmpfs), then the lane's tests
# that have not passed in an earlier boot of this lane (test_lanes clears them before the first).
TEST_JOB = r"""
release=$(uname -r)
out=reports/kernel-lane/$release
mkdir -p "$out"
export CHAOSLAB_LANE_PASSED="$PWD/$out/passed.txt"
if command -v dockerd >/dev/null; then
  (dockerd --data-root /var/lib/docker >/var/log/dockerd.log 2>&1 &)
  for i in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "lane: dockerd did not start"; tail -20 /var/log/dockerd.log; }
fi
start=$(date +%s)
.venv/bin/python -m pytest -p no:cacheprovider -ra -m kernel_lane tests/test_kernel_lane.py \
  --junitxml="$out/junit-boot$CHAOSLAB_LANE_BOOT.xml" "$@"
rc=$?
# every test left had passed in an earlier boot: pytest ran none and says so with 5
[ "$rc" = 5 ] && [ -s "$CHAOSLAB_LANE_PASSED" ] && rc=0
echo "lane: $release: tests took $(( $(date +%s) - start ))s"
exit $rc
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("kernels", nargs="+", choices=sorted(KERNELS))
    r = sub.add_parser("run")
    r.add_argument("kernel", choices=sorted(KERNELS))
    r.add_argument("--timeout", type=float, default=1800)
    t = sub.add_parser("test", help="boot a kernel and run the lane's tests in it (extra args go to pytest)")
    t.add_argument("kernels", nargs="+", choices=sorted(KERNELS))
    t.add_argument("--timeout", type=float, default=1200, help="seconds one boot may take")
    t.add_argument(
        "--budget", type=float, default=3600, help="seconds all of them may take, second boots too"
    )
    sub.add_parser("table", help="print the README's table of supported kernels from the lane's results")
    argv = sys.argv[1:]
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if os.geteuid() != 0:
        print("kernel_lane: run as root", file=sys.stderr)
        return 1
    if args.cmd == "prepare":
        for k in args.kernels:
            print(f"lane: {k}: {prepare(k)}")
        return 0
    if args.cmd == "table":
        print(table())
        return 0
    if args.cmd == "test":
        return test_lanes(
            args.kernels, ["/bin/sh", "-c", TEST_JOB, "lane", *command], args.timeout, args.budget
        )
    return boot(
        args.kernel, command or ["/bin/sh", "-c", "uname -a"], args.timeout, LANE / f"{args.kernel}.log"
    ).rc


if __name__ == "__main__":
    sys.exit(main())
