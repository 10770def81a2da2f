"""Find functions, instruction boundaries and RET sites in an ELF binary (Go or not).

Go functions cannot be probed with uretprobes (the Go runtime moves and inspects stacks,
and a uretprobe rewrites the return address on the stack), so the end of a Go function
is observed with uprobes on each of its RET instructions. Symbols come from the ELF
`.symtab`; instruction boundaries from binutils' objdump.
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from chaoslab.errors import PreflightError
from chaoslab.proc import run

_SHT_SYMTAB = 2
_STT_OBJECT, _STT_FUNC = 1, 2
_PT_LOAD = 1
_ET_DYN = 3


@dataclass(frozen=True)
class Function:
    name: str
    vaddr: int  # address in the ELF file's virtual address space
    size: int
    file_offset: int  # offset of the entry in the file, as uprobes want it
    # vaddr of the instruction after the entry uprobe's: where a fault that holds a call puts its
    # breakpoint (one address cannot hold a uprobe and a ptrace breakpoint: the uprobe would take
    # the other's trap), so that the probe's clock is already running when the hold begins
    after_probe: int
    rets: tuple[int, ...]  # vaddrs of the RET instructions
    # Where a uprobe marks the entry: an instruction of the prologue that the kernel emulates
    # on a uprobe hit (`emulated_entry`), else 0 (the entry itself). An emulated instruction
    # costs one trap; any other is also single-stepped out of line, a second trap (about 15x
    # the time under this hypervisor: chaoslab.probes.cost times both).
    entry_probe: int = 0

    @property
    def entry_emulated(self) -> bool:
        return self.entry_probe != 0

    @property
    def entry_offset(self) -> int:
        return self.offset_of(self.entry_probe or self.vaddr)

    def offset_of(self, vaddr: int) -> int:
        return self.file_offset + (vaddr - self.vaddr)


@dataclass(frozen=True)
class Elf:
    path: Path
    is_pie: bool
    symbols: dict[str, tuple[int, int]]  # name -> (vaddr, size), functions only
    loads: tuple[tuple[int, int, int], ...]  # (vaddr, file offset, file size) of PT_LOAD segments
    objects: dict[str, tuple[int, int]] = field(default_factory=dict)  # variables: name -> (vaddr, size)

    def file_offset(self, vaddr: int) -> int:
        for seg_vaddr, seg_off, seg_size in self.loads:
            if seg_vaddr <= vaddr < seg_vaddr + seg_size:
                return vaddr - seg_vaddr + seg_off
        raise PreflightError(f"{self.path}: address {vaddr:#x} is in no loadable segment")


@lru_cache(maxsize=16)
def read_elf(path: Path) -> Elf:
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise PreflightError(
            f"{path} is not a 64-bit little-endian ELF binary", "point the target at a Linux x86-64 binary"
        )
    e_type = struct.unpack_from("<H", data, 16)[0]
    e_phoff, e_shoff = struct.unpack_from("<QQ", data, 32)
    e_phentsize, e_phnum, e_shentsize, e_shnum = struct.unpack_from("<HHHH", data, 54)
    loads = []
    for i in range(e_phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, e_phoff + i * e_phentsize
        )
        if p_type == _PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    symbols: dict[str, tuple[int, int]] = {}
    objects: dict[str, tuple[int, int]] = {}
    for sh in sections:
        if sh[1] != _SHT_SYMTAB:
            continue
        sym_off, sym_size, link, entsize = sh[4], sh[5], sh[6], sh[9]
        str_off = sections[link][4]
        for j in range(sym_size // entsize):
            st_name, st_info, _other, _shndx, st_value, st_size = struct.unpack_from(
                "<IBBHQQ", data, sym_off + j * entsize
            )
            kind = st_info & 0xF
            if kind not in (_STT_FUNC, _STT_OBJECT) or st_value == 0:
                continue
            end = data.index(b"\0", str_off + st_name)
            table = symbols if kind == _STT_FUNC else objects
            table[data[str_off + st_name : end].decode(errors="replace")] = (st_value, st_size)
    return Elf(path, e_type == _ET_DYN, symbols, tuple(loads), objects)


@dataclass(frozen=True)
class GoBinary:
    """What the ELF file itself says about a Go program."""

    path: Path
    version: str  # "go1.26.8", from its build info ("" if unreadable)
    symbols: bool  # it has a symbol table (Go probes and faults need one)
    module: str  # its main module's path, when the build info names it

    def describe(self) -> str:
        what = f"Go {self.version.removeprefix('go') or '?'}" + (f" ({self.module})" if self.module else "")
        return what if self.symbols else f"{what}, stripped (no symbol table)"


_BUILDINFO_MAGIC = b"\xff Go buildinf:"


def _section(fh: BinaryIO, name: bytes) -> tuple[int, int] | None:
    """(file offset, size) of a section, reading only the headers."""
    head = fh.read(64)
    if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        return None
    e_shoff = struct.unpack_from("<Q", head, 40)[0]
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", head, 58)
    if not e_shoff or not e_shnum or e_shstrndx >= e_shnum:
        return None
    fh.seek(e_shoff)
    table = fh.read(e_shentsize * e_shnum)
    headers = [struct.unpack_from("<IIQQQQIIQQ", table, i * e_shentsize) for i in range(e_shnum)]
    strtab = headers[e_shstrndx]
    fh.seek(strtab[4])
    names = fh.read(strtab[5])
    for h in headers:
        end = names.find(b"\0", h[0])
        if names[h[0] : end] == name:
            return h[4], h[5]
    return None


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while at < len(data):
        b = data[at]
        value |= (b & 0x7F) << shift
        at += 1
        if not b & 0x80:
            break
        shift += 7
    return value, at


@lru_cache(maxsize=64)
def go_binary(path: Path) -> GoBinary | None:
    """The Go facts of an executable, or None when it is not a Go program (or unreadable).

    Go writes a `.go.buildinfo` section into every binary, stripped or not; since Go 1.18 it
    holds the toolchain version and the module info inline."""
    try:
        with path.open("rb") as fh:
            where = _section(fh, b".go.buildinfo")
            if where is None:
                return None
            fh.seek(where[0])
            data = fh.read(min(where[1], 1 << 16))
    except OSError:
        return None
    if not data.startswith(_BUILDINFO_MAGIC):
        return None
    version = module = ""
    if len(data) > 32 and data[15] & 0x2:  # inline strings (Go 1.18 on)
        n, at = _varint(data, 32)
        version = data[at : at + n].decode(errors="replace")
        n, at = _varint(data, at + n)
        info = data[at : at + n].decode(errors="replace")
        module = next((line.split("\t")[1] for line in info.splitlines() if line.startswith("mod\t")), "")
    try:
        symbols = "runtime.main" in read_elf(path).symbols
    except PreflightError:
        symbols = False
    return GoBinary(path, version, symbols, module)


def has_function(path: Path, name: str) -> bool:
    return name in read_elf(path).symbols


def find_function(path: Path, name: str) -> Function:
    elf = read_elf(path)
    if not elf.symbols:
        raise PreflightError(
            f"{path} has no symbol table (stripped binary): Go probes and faults need function symbols",
            "build the service without '-ldflags=-s' and without running strip on it",
        )
    if name not in elf.symbols:
        raise PreflightError(
            f"{path}: function {name!r} not found", "is this a Go binary that uses crypto/tls?"
        )
    vaddr, size = elf.symbols[name]
    insns = _instructions(path, vaddr, vaddr + size)
    if len(insns) < 2:
        raise PreflightError(f"{path}: cannot disassemble {name}")
    rets = tuple(a for a, mnemonic in insns if mnemonic.startswith("ret"))
    if not rets:
        raise PreflightError(f"{path}: {name} has no RET instruction to probe")
    probe = emulated_entry(insns)
    after = next(i + 1 for i, (a, _) in enumerate(insns) if a == (probe or vaddr))
    if after >= len(insns):
        raise PreflightError(f"{path}: {name} is too short to probe")
    return Function(name, vaddr, size, elf.file_offset(vaddr), insns[after][0], rets, probe)


# x86 instructions a uprobe hit emulates (arch/x86/kernel/uprobes.c): no single-step after the
# trap. Direct jumps, conditional jumps and calls (rel8/rel32), a push of a register, and the
# one-byte nop; an indirect call or jump (`call *%rax`), a push from memory and the multi-byte
# nops (emulated only since Linux 6.11) are stepped.
PROLOGUE = 5  # instructions looked at from the entry


def emulated(text: str) -> bool:
    """Whether objdump's text of an instruction ("jbe    6d6d40 <...>") is one a uprobe hit
    emulates on every kernel chaoslab supports."""
    mnemonic, _, operands = text.partition(" ")
    operands = operands.strip()
    if mnemonic == "nop":
        return not operands
    if mnemonic.startswith("push"):
        return operands.startswith("%")
    if mnemonic in ("jrcxz", "jecxz", "jcxz"):  # opcode 0xe3: stepped
        return False
    return mnemonic.startswith(("j", "call")) and not operands.startswith("*")


def emulated_entry(insns: list[tuple[int, str]]) -> int:
    """Where an entry uprobe costs one trap: the first instruction of the prologue that the kernel
    emulates, with only straight-line instructions before it, so that every call runs it (Go's
    stack check, `cmp` then `jbe` to morestack, which starts the function over: the `jbe`); 0
    when there is none (the uprobe goes on the entry, stepped out of line)."""
    for addr, text in insns[:PROLOGUE]:
        if emulated(text):
            return addr
        mnemonic = text.split(" ", 1)[0]
        # control leaves the straight line (a stepped jump, a prefixed one, a return...)
        if mnemonic.startswith(("ret", "j", "loop", "syscall", "int", "ud", "notrack", "bnd")):
            break
    return 0


def runtime_address(pid: int, path: Path, vaddr: int) -> int:
    """The address of `vaddr` of `path` inside process `pid` (differs from vaddr only for PIE)."""
    elf = read_elf(path)
    if not elf.is_pie:
        return vaddr
    return _mapped_at(pid, path) + elf.file_offset(vaddr)


def variable_address(pid: int, path: Path, name: str) -> int:
    """Where the global variable `name` of `path` lives in process `pid` (its .data or .bss,
    which a PIE binary has moved by its load bias); PreflightError when the binary has none."""
    elf = read_elf(path)
    if name not in elf.objects:
        raise PreflightError(f"{path}: no variable {name!r} in its symbol table")
    vaddr = elf.objects[name][0]
    if not elf.is_pie:
        return vaddr
    first = min(v for v, _, _ in elf.loads) & ~0xFFF
    return _mapped_at(pid, path) - first + vaddr


def _mapped_at(pid: int, path: Path) -> int:
    """The start of the mapping of `path`'s first page in process `pid`."""
    # The mapping of that file, by device and inode: its name in maps depends on the mount
    # namespace it is read from (a container's path, a chroot's).
    st = os.stat(path)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[4] == str(st.st_ino) and parts[3] == dev:
            start, _end = (int(x, 16) for x in parts[0].split("-"))
            if int(parts[2], 16) == 0:
                return start
    raise PreflightError(f"{path} is not mapped in process {pid}")


def _instructions(path: Path, start: int, end: int) -> list[tuple[int, str]]:
    objdump = shutil.which("objdump")
    if objdump is None:
        raise PreflightError(
            "objdump is missing (needed to find instruction boundaries)", "apt-get install binutils"
        )
    out = run(
        [
            objdump,
            "-d",
            "--no-show-raw-insn",
            f"--start-address={start:#x}",
            f"--stop-address={end:#x}",
            str(path),
        ]
    ).stdout
    insns = []
    for line in out.splitlines():
        head, sep, rest = line.partition(":\t")
        if not sep:
            continue
        try:
            addr = int(head.strip(), 16)
        except ValueError:
            continue
        insns.append((addr, " ".join(rest.split())))
    return insns
