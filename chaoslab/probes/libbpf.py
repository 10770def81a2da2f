"""A thin ctypes binding to libbpf (Debian `libbpf1`): open, load, attach, read maps.

Only what chaoslab's probes use. Programs are compiled BPF objects from bpf/*.bpf.c.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

from chaoslab.errors import PreflightError

_lib: ctypes.CDLL | None = None
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


def _quiet_impl(level: int, fmt: bytes, args: int) -> int:
    return 0  # libbpf's own messages are replaced by chaoslab's errors


_quiet = _PRINT_FN(_quiet_impl)


def lib() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            handle = ctypes.CDLL(name, use_errno=True)
        except OSError as exc:
            raise PreflightError(f"libbpf is missing ({exc})", "apt-get install libbpf1") from exc
        vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        sigs: dict[str, tuple[type | None, list[type]]] = {
            "bpf_object__open_file": (vp, [cp, vp]),
            "bpf_object__load": (ci, [vp]),
            "bpf_object__close": (None, [vp]),
            "bpf_object__find_program_by_name": (vp, [vp, cp]),
            "bpf_object__next_program": (vp, [vp, vp]),
            "bpf_object__find_map_fd_by_name": (ci, [vp, cp]),
            "bpf_object__find_map_by_name": (vp, [vp, cp]),
            "bpf_map__set_max_entries": (ci, [vp, ctypes.c_uint32]),
            "bpf_program__attach_uprobe_opts": (vp, [vp, ci, cp, ctypes.c_size_t, vp]),
            "bpf_program__attach": (vp, [vp]),
            "bpf_program__attach_tracepoint": (vp, [vp, cp, cp]),
            "bpf_program__fd": (ci, [vp]),
            "bpf_program__name": (cp, [vp]),
            "bpf_program__section_name": (cp, [vp]),
            "bpf_program__set_autoload": (ci, [vp, ctypes.c_bool]),
            "bpf_program__set_attach_target": (ci, [vp, ci, cp]),
            "bpf_program__autoload": (ctypes.c_bool, [vp]),
            "bpf_obj_get_info_by_fd": (ci, [ci, vp, vp]),
            "bpf_enable_stats": (ci, [ci]),
            "bpf_link__destroy": (ci, [vp]),
            "bpf_map_update_elem": (ci, [ci, vp, vp, ctypes.c_uint64]),
            "bpf_map_lookup_elem": (ci, [ci, vp, vp]),
            "libbpf_num_possible_cpus": (ci, []),
            "bpf_map_get_next_key": (ci, [ci, vp, vp]),
            "bpf_map_delete_elem": (ci, [ci, vp]),
            "bpf_map_get_fd_by_id": (ci, [ctypes.c_uint32]),
            "libbpf_set_print": (vp, [_PRINT_FN]),
        }
        for fn, (res, args) in sigs.items():
            f = getattr(handle, fn)
            f.restype, f.argtypes = res, args
        handle.libbpf_set_print(_quiet)
        _lib = handle
    return _lib


class _UprobeOpts(ctypes.Structure):
    """struct bpf_uprobe_opts (libbpf.h)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ref_ctr_offset", ctypes.c_size_t),
        ("bpf_cookie", ctypes.c_uint64),
        ("retprobe", ctypes.c_bool),
        ("func_name", ctypes.c_char_p),
    ]


def _fail(what: str) -> PreflightError:
    err = ctypes.get_errno()
    return PreflightError(f"{what}: {os.strerror(err) if err else 'failed'}")


# struct bpf_prog_info (uapi/linux/bpf.h): run_time_ns and run_cnt sit at byte 192.
PROG_INFO_SIZE = 232
# struct bpf_map_info: type, id, key_size, value_size, max_entries, map_flags (u32 each), name[16]
MAP_INFO = struct.Struct("<6I16s")
PROG_INFO_RUN_TIME = 192
BPF_STATS_RUN_TIME = 0


def enable_stats() -> int:
    """Turn on run-time accounting of BPF programs until the returned fd is closed."""
    fd = int(lib().bpf_enable_stats(BPF_STATS_RUN_TIME))
    if fd < 0:
        raise _fail("cannot enable BPF run-time statistics")
    return fd


# The maps a host may size (CHAOSLAB_BPF_MAP_ENTRIES): the histograms and the hashes of events
# in flight. The others are sized to what their programs index (a bit per pid, a slot per
# counter) and are not to be changed.
RESIZABLE_MAPS = (
    "hist",
    "starts",
    "runnable",
    "spans",
    "began",
    "downstream",
    "reading",
    "queued",
    "frozen",
    "pending",
    "connects",
)


def map_sizes() -> dict[str, int]:
    """Maps sized other than their programs say, by name: CHAOSLAB_BPF_MAP_ENTRIES, e.g.
    "hist=16" (every object that has such a map). For tests and for a host that needs
    bigger in-flight maps; a map too small loses events, and the report counts them."""
    sizes = {}
    for item in filter(None, os.environ.get("CHAOSLAB_BPF_MAP_ENTRIES", "").replace(" ", "").split(",")):
        name, _, entries = item.partition("=")
        if not name or not entries.isdigit() or int(entries) < 1:
            raise PreflightError(
                f"CHAOSLAB_BPF_MAP_ENTRIES: {item!r} is not a map's name and its entries",
                "give NAME=ENTRIES, comma-separated, e.g. hist=65536",
            )
        if name not in RESIZABLE_MAPS:
            raise PreflightError(
                f"CHAOSLAB_BPF_MAP_ENTRIES: {name!r} is not a map that can be sized",
                f"name one of {', '.join(RESIZABLE_MAPS)}",
            )
        sizes[name] = int(entries)
    return sizes


class BpfObject:
    """One loaded BPF object file and the links attached from it.

    `skip` names programs of the object that are not loaded at all: the alternatives a
    probe did not choose on this kernel (a fentry program whose function is missing would
    make the whole object fail to load). `functions` gives fentry/fexit programs declared
    without one (SEC("fexit")) the kernel function they attach to, by program name.
    """

    def __init__(
        self, path: Path, skip: Collection[str] = (), functions: Mapping[str, str] | None = None
    ) -> None:
        self.path = path
        sizes = map_sizes()
        self._obj = lib().bpf_object__open_file(str(path).encode(), None)
        if not self._obj:
            raise _fail(f"cannot open BPF object {path}")
        prog = lib().bpf_object__next_program(self._obj, None)
        while prog:
            name = lib().bpf_program__name(prog).decode()
            if name in skip:
                lib().bpf_program__set_autoload(prog, False)
            elif (
                functions
                and name in functions
                and lib().bpf_program__set_attach_target(prog, 0, functions[name].encode()) != 0
            ):
                err = _fail(f"{path.name}: cannot aim {name} at {functions[name]}")
                lib().bpf_object__close(self._obj)
                self._obj = None
                raise err
            prog = lib().bpf_object__next_program(self._obj, prog)
        for name, entries in sizes.items():
            found = lib().bpf_object__find_map_by_name(self._obj, name.encode())
            if found and lib().bpf_map__set_max_entries(found, entries) != 0:
                err = _fail(f"{path.name}: cannot size map {name} to {entries} entries")
                lib().bpf_object__close(self._obj)
                self._obj = None
                raise err
        if lib().bpf_object__load(self._obj) != 0:
            err = _fail(f"kernel refused BPF object {path.name}")
            lib().bpf_object__close(self._obj)
            self._obj = None
            raise err
        self._links: list[int] = []

    def _program(self, name: str) -> int:
        prog = lib().bpf_object__find_program_by_name(self._obj, name.encode())
        if not prog:
            raise PreflightError(f"{self.path.name}: no program {name!r}")
        return int(prog)

    def attach_uprobe(self, program: str, pid: int, binary: Path, offset: int, cookie: int = 0) -> None:
        """A uprobe at a file offset; the program reads `cookie` with bpf_get_attach_cookie."""
        opts = _UprobeOpts(sz=ctypes.sizeof(_UprobeOpts), bpf_cookie=cookie)
        link = lib().bpf_program__attach_uprobe_opts(
            self._program(program), pid, str(binary).encode(), offset, ctypes.byref(opts)
        )
        if not link:
            raise _fail(f"cannot attach uprobe {program} at {binary}+{offset:#x} for pid {pid}")
        self._links.append(int(link))

    def attach(self, program: str) -> None:
        """Attach one program by its SEC() name (fentry/fexit: at the function it was loaded for)."""
        link = lib().bpf_program__attach(self._program(program))
        if not link:
            raise _fail(f"{self.path.name}: cannot attach {program}")
        self._links.append(int(link))

    def attach_all(self) -> None:
        """Attach every loaded program by its SEC() name (tracepoints, raw tracepoints, fentry, kprobes)."""
        prog = lib().bpf_object__next_program(self._obj, None)
        while prog:
            if lib().bpf_program__autoload(prog):
                link = lib().bpf_program__attach(prog)
                if not link:
                    name = lib().bpf_program__section_name(prog).decode()
                    raise _fail(f"{self.path.name}: cannot attach {name}")
                self._links.append(int(link))
            prog = lib().bpf_object__next_program(self._obj, prog)

    def programs(self) -> Iterator[tuple[str, str]]:
        """(name, section) of every program in the object."""
        prog = lib().bpf_object__next_program(self._obj, None)
        while prog:
            yield lib().bpf_program__name(prog).decode(), lib().bpf_program__section_name(prog).decode()
            prog = lib().bpf_object__next_program(self._obj, prog)

    def attach_tracepoint(self, program: str, category: str, name: str) -> None:
        link = lib().bpf_program__attach_tracepoint(self._program(program), category.encode(), name.encode())
        if not link:
            raise _fail(f"cannot attach {program} to tracepoint {category}:{name}")
        self._links.append(int(link))

    def run_stats(self, program: str) -> tuple[int, int]:
        """(run_time_ns, run_cnt) of a program, counted while `enable_stats()` is held."""
        info = (ctypes.c_uint8 * PROG_INFO_SIZE)()
        size = ctypes.c_uint32(PROG_INFO_SIZE)
        fd = lib().bpf_program__fd(self._program(program))
        if lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
            raise _fail(f"cannot read the statistics of {program}")
        run_time, run_cnt = struct.unpack_from("<QQ", bytes(info), PROG_INFO_RUN_TIME)
        return run_time, run_cnt

    def stats(self) -> Iterator[tuple[str, str, int, int]]:
        """(name, section, run_time_ns, run_cnt) of every loaded program, counted while
        `enable_stats()` is held."""
        for name, section in self.programs():
            prog = lib().bpf_object__find_program_by_name(self._obj, name.encode())
            if prog and lib().bpf_program__autoload(prog) and lib().bpf_program__fd(prog) >= 0:
                yield name, section, *self.run_stats(name)

    def update_bytes(self, map_name: str, key: int, value: bytes) -> None:
        k, v = ctypes.c_uint32(key), ctypes.create_string_buffer(value, len(value))
        if lib().bpf_map_update_elem(self.map_fd(map_name), ctypes.byref(k), v, 0) != 0:
            raise _fail(f"{self.path.name}: cannot update map {map_name}")

    def insert_new(self, map_name: str, key: bytes, value: bytes) -> bool:
        """Add `key` to a hash map unless it is there already (BPF_NOEXIST); True if added."""
        k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value, len(value))
        return int(lib().bpf_map_update_elem(self.map_fd(map_name), k, v, 1)) == 0

    def delete(self, map_name: str, key: bytes) -> bool:
        k = ctypes.create_string_buffer(key, len(key))
        return int(lib().bpf_map_delete_elem(self.map_fd(map_name), k)) == 0

    def lookup_u64(self, map_name: str, key: int) -> int:
        k, v = ctypes.c_uint32(key), ctypes.c_uint64()
        if lib().bpf_map_lookup_elem(self.map_fd(map_name), ctypes.byref(k), ctypes.byref(v)) != 0:
            return 0
        return v.value

    def percpu_sum_u64(self, map_name: str, key: int) -> int:
        """The sum over CPUs of a per-CPU map's u64 value at `key` (0 when absent)."""
        ncpu = int(lib().libbpf_num_possible_cpus())
        k, v = ctypes.c_uint32(key), (ctypes.c_uint64 * max(ncpu, 1))()
        if lib().bpf_map_lookup_elem(self.map_fd(map_name), ctypes.byref(k), v) != 0:
            return 0
        return sum(v)

    def lookup_bytes(self, map_name: str, key: int, size: int) -> bytes | None:
        k, v = ctypes.c_uint32(key), ctypes.create_string_buffer(size)
        if lib().bpf_map_lookup_elem(self.map_fd(map_name), ctypes.byref(k), v) != 0:
            return None
        return v.raw

    def has_map(self, name: str) -> bool:
        return int(lib().bpf_object__find_map_fd_by_name(self._obj, name.encode())) >= 0

    def map_fd(self, name: str) -> int:
        fd = int(lib().bpf_object__find_map_fd_by_name(self._obj, name.encode()))
        if fd < 0:
            raise PreflightError(f"{self.path.name}: no map {name!r}")
        return fd

    def map_id(self, name: str) -> int:
        """The kernel's id of a map: another process opens it by id (`forget_u32`)."""
        return _map_info(self.map_fd(name))[1]

    def update_u32(self, map_name: str, key: int, value: int) -> None:
        k, v = ctypes.c_uint32(key), ctypes.c_uint32(value)
        if lib().bpf_map_update_elem(self.map_fd(map_name), ctypes.byref(k), ctypes.byref(v), 0) != 0:
            raise _fail(f"{self.path.name}: cannot update map {map_name}")

    def add_target(self, pid: int, index: int) -> None:
        """Make process `pid` target `index` of the object's programs: its entry in `targets`
        and its bit in `target_bits` (bpf/chaoslab.bpf.h)."""
        self.update_u32("targets", pid, index)
        if not self.set_bit("target_bits", pid):
            raise _fail(f"{self.path.name}: pid {pid} is above the highest pid_max (4194304)")

    def set_bit(self, map_name: str, n: int) -> bool:
        """Set bit `n` of a bit array (an array map of u64 words); False if `n` is past its end."""
        fd = self.map_fd(map_name)
        k, bits = ctypes.c_uint32(n >> 6), ctypes.c_uint64()
        if lib().bpf_map_lookup_elem(fd, ctypes.byref(k), ctypes.byref(bits)) != 0:
            return False
        bits.value |= 1 << (n & 63)
        if lib().bpf_map_update_elem(fd, ctypes.byref(k), ctypes.byref(bits), 0) != 0:
            raise _fail(f"{self.path.name}: cannot update map {map_name}")
        return True

    def hist_items(self, map_name: str = "hist") -> Iterator[tuple[int, int, int, int]]:
        """(target key, bucket, count, sum in ns) of each bucket of a histogram map
        (bpf/chaoslab.bpf.h: keyed by two u32, per CPU (count, sum) u64 pairs, summed here)."""
        fd = self.map_fd(map_name)
        ncpu = int(lib().libbpf_num_possible_cpus()) if _map_info(fd)[0] in PERCPU_MAPS else 1
        key_t = ctypes.c_uint32 * 2
        prev, key, val = key_t(), key_t(), (ctypes.c_uint64 * (2 * max(ncpu, 1)))()
        first = True
        while lib().bpf_map_get_next_key(fd, None if first else ctypes.byref(prev), ctypes.byref(key)) == 0:
            first = False
            if lib().bpf_map_lookup_elem(fd, ctypes.byref(key), val) == 0:
                yield key[0], key[1], sum(val[0::2]), sum(val[1::2])
            ctypes.memmove(prev, key, ctypes.sizeof(key))

    def close(self) -> None:
        for link in self._links:
            lib().bpf_link__destroy(link)
        self._links.clear()
        if self._obj:
            lib().bpf_object__close(self._obj)
            self._obj = None


# BPF_MAP_TYPE_PERCPU_HASH, _PERCPU_ARRAY, _LRU_PERCPU_HASH: a value per possible CPU
PERCPU_MAPS = (5, 6, 10)


def _map_info(fd: int) -> tuple[int, int, int, int, str]:
    """(type, id, key size, value size, name) of an open map."""
    info = (ctypes.c_uint8 * 96)()
    size = ctypes.c_uint32(96)
    if lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
        raise _fail("cannot read a map's information")
    kind, map_id, key_size, value_size, _, _, name = MAP_INFO.unpack_from(bytes(info))
    return kind, map_id, key_size, value_size, name.split(b"\0", 1)[0].decode()


def forget_u32(map_id: int, name: str, key: int) -> bool:
    """Delete `key` from the map with id `map_id`, when that map is still there and is named
    `name` with u32 keys (another process's map: an object that lives while its loader does)."""
    fd = int(lib().bpf_map_get_fd_by_id(map_id))
    if fd < 0:
        return False
    try:
        _, _, key_size, _, found = _map_info(fd)
        if found != name or key_size != 4:
            return False
        k = ctypes.c_uint32(key)
        return int(lib().bpf_map_delete_elem(fd, ctypes.byref(k))) == 0
    finally:
        os.close(fd)


def program_names(path: Path) -> list[str]:
    """The programs of an object file, in order, without loading it."""
    obj = lib().bpf_object__open_file(str(path).encode(), None)
    if not obj:
        raise _fail(f"cannot open BPF object {path}")
    names = []
    prog = lib().bpf_object__next_program(obj, None)
    while prog:
        names.append(lib().bpf_program__name(prog).decode())
        prog = lib().bpf_object__next_program(obj, prog)
    lib().bpf_object__close(obj)
    return names


_attachable: dict[tuple[Path, str], str | None] = {}


def attachable(path: Path, program: str) -> str | None:
    """None when `program` of the object at `path` loads and attaches on this kernel, by
    itself; else why not. Checked for real (loaded, attached, detached), once per process."""
    key = (path, program)
    if key not in _attachable:
        obj: BpfObject | None = None
        try:
            obj = BpfObject(path, skip=set(program_names(path)) - {program})
            obj.attach_all()
            _attachable[key] = None
        except PreflightError as exc:
            _attachable[key] = exc.message
        finally:
            if obj is not None:
                obj.close()
    return _attachable[key]
