#!/usr/bin/env bash
# Install everything chaoslab needs on a fresh Debian/Ubuntu machine (as root), idempotently:
# apt packages, a virtual environment with the Python dependencies, tracefs, and the
# builds (Go services, BPF programs, native injector).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (chaoslab needs namespaces, cgroups, BPF and ptrace)" >&2
  exit 1
fi

packages=(
  iproute2 util-linux procps psmisc   # namespaces, veth, nsenter
  iptables strace                     # fault tools
  binutils                            # objdump: instruction boundaries for Go probes and faults
  clang llvm libbpf-dev libbpf1       # BPF programs (compiled here, loaded through libbpf)
  gcc libc6-dev libnetfilter-queue-dev  # the native helpers (uinject, nfqdelay)
  openssl curl ca-certificates
  wrk                                 # bench/: the load for the probe-overhead benchmark
  python3-venv
  docker.io docker-compose            # the Docker runtime (engine, runc, containerd) and compose
  qemu-system-x86 busybox-static cpio kmod xz-utils  # the kernel lane (scripts/kernel_lane.py)
  chromium                            # tests: report.html and the live page opened in a real browser
  redis-server                        # a non-Go target of the tests and scenarios/cache_backend.yaml
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Go (>= 1.24: the demo services and the entropy fault's target path). Debian stable's
# golang is too old; this machine kind ships Go in /usr/local/go.
export PATH="$PATH:/usr/local/go/bin"
if ! command -v go >/dev/null; then
  echo "setup: Go >= 1.24 is needed (https://go.dev/dl/); not found on PATH or in /usr/local/go" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'

# Tracepoints are looked up in tracefs, which is not mounted at boot everywhere.
if [ ! -e /sys/kernel/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing
fi

# The Docker engine, for the Docker runtime: started here when none answers (there may be
# no init system to start it, as in CI containers and VMs without systemd).
if ! docker info >/dev/null 2>&1; then
  echo "setup: starting dockerd (log: /var/log/chaoslab-dockerd.log)"
  setsid dockerd >/var/log/chaoslab-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then
    echo "setup: dockerd did not start; see /var/log/chaoslab-dockerd.log" >&2
    tail -20 /var/log/chaoslab-dockerd.log >&2
    exit 1
  fi
fi

for mod in docker/*/go.mod; do (cd "$(dirname "$mod")" && go mod download); done
# A Go HTTPS server nobody in this project wrote, from the Go module proxy: the tests point
# chaoslab at it the way a user points it at their own service.
if [ ! -x .build/third-party/go-httpbin ]; then
  GOBIN="$PWD/.build/third-party" CGO_ENABLED=0 go install github.com/mccutchen/go-httpbin/v2/cmd/go-httpbin@v2.26.0
fi
# A peer open-model load tool, for bench/peer_latency.py (the client's latency side by side)
if [ ! -x .build/third-party/vegeta ]; then
  GOBIN="$PWD/.build/third-party" CGO_ENABLED=0 go install github.com/tsenart/vegeta/v12@v12.13.0
fi
.venv/bin/chaoslab build --images
echo "setup: done"
