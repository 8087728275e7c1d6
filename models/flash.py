"""Flash offload: how a GGUF's weights are held within the LLM's memory budget.

``read_layout`` reads the tensor table from the GGUF header (the ``gguf`` package); ``make_plan``
chooses the mode:

- ``resident``: model + KV cache + working memory fit the budget; llama.cpp's defaults (mmap with
  its whole-file prefetch, CPU weight repacking) are kept, they are the fastest.
- ``file-backed``: the weights stay in the page cache of the file, repacking off, the whole-file
  prefetch off. A fixed set of tensors is pinned (the always-used ones: attention, norms, output;
  for MoE every non-expert tensor; then as many whole FFN tensors as the budget holds) and the rest
  streams layer by layer: read ahead of compute with ``posix_fadvise(WILLNEED)`` and dropped
  behind it (``MADV_DONTNEED`` on llama.cpp's mapping, then ``POSIX_FADV_DONTNEED``), so streamed
  pages never push pinned ones out. Per token that reads about (streamed bytes), not the whole file.

``Placement`` carries the policy out at run time; ``NoPrefetch`` turns llama.cpp's whole-file
prefetch off while a model loads. Nothing here imports llama_cpp.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import queue
import re
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from mneme.core.config import parse_memory_budget
from mneme.core.errors import BadInputError, UserError

log = logging.getLogger("mneme.flash")

MiB = 1 << 20
EXPERT = re.compile(r"_exps\.")                       # ffn_{gate,up,down}_exps: routed experts
LAYER = re.compile(r"^blk\.(\d+)\.")
AHEAD = 2                                             # layers read ahead of compute
RUNTIME_BYTES = 64 * MiB                              # llama.cpp's own allocations beside the buffers
PAGE = mmap.PAGESIZE


def fmt_bytes(n: float) -> str:
    """In the units a budget is written in: 1.25G, 799M, 12K."""
    for unit, size in (("G", 1 << 30), ("M", MiB)):
        if abs(n) >= size:
            return f"{n / size:.2f}".rstrip("0").rstrip(".") + unit if unit == "G" else f"{n / size:.0f}M"
    return f"{n / 1024:.0f}K"


@dataclass(frozen=True)
class Tensor:
    name: str
    offset: int      # absolute, in the file
    size: int
    layer: int | None
    kind: str        # "always", "ffn" (dense, per layer), "expert" (MoE, per layer), "sparse" (rows)


@dataclass(frozen=True)
class Layout:
    path: Path
    file_size: int
    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_vocab: int
    tensors: tuple[Tensor, ...]

    @property
    def moe(self) -> bool:
        return any(t.kind == "expert" for t in self.tensors)

    def kv_bytes(self, n_ctx: int) -> int:
        """f16 K and V for every layer and position (llama.cpp's default cache type)."""
        head_dim = self.n_embd // max(1, self.n_head)
        return 2 * 2 * self.n_layer * n_ctx * self.n_head_kv * head_dim

    def work_bytes(self, n_batch: int = 512) -> int:
        """Compute buffers (logits and activations of one batch) plus the runtime's own."""
        return 4 * n_batch * (self.n_vocab + 4 * self.n_embd) + RUNTIME_BYTES


def _classify(name: str, tied: bool) -> tuple[int | None, str]:
    m = LAYER.match(name)
    layer = int(m.group(1)) if m else None
    if EXPERT.search(name):
        return layer, "expert"
    if name.startswith("token_embd."):
        return None, "always" if tied else "sparse"  # untied: one row read per token
    if layer is not None and ".ffn_" in name and "norm" not in name and "_inp" not in name \
            and "_shexp" not in name:
        return layer, "ffn"
    return layer, "always"


_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
           11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _read_header(path: Path) -> tuple[dict, list[tuple[str, list[int], int, int]], int]:
    """The GGUF header: metadata (arrays as their length, except none are needed whole), tensor
    infos (name, dims, type, offset from the data start) and where the data starts. Walks the
    header directly: gguf.GGUFReader builds an object per vocabulary entry (tens of seconds for a
    150k-token model), and status only needs the table."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"GGUF":
            raise ValueError("wrong magic bytes")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", m, 4)
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        pos = 24

        def string() -> str:
            nonlocal pos
            (n,) = struct.unpack_from("<Q", m, pos)
            text = m[pos + 8:pos + 8 + n].decode("utf-8", "replace")
            pos += 8 + n
            return text

        def value(kind: int):
            nonlocal pos
            if kind == _STRING:
                return string()
            if kind == _ARRAY:
                sub, count = struct.unpack_from("<IQ", m, pos)
                pos += 12
                if sub in _SCALAR:
                    pos += struct.calcsize(_SCALAR[sub]) * count
                else:
                    for _ in range(count):
                        value(sub)
                return count  # an array's length is all the planner needs
            fmt = _SCALAR[kind]
            (v,) = struct.unpack_from(fmt, m, pos)
            pos += struct.calcsize(fmt)
            return v

        meta = {}
        for _ in range(n_kv):
            key = string()
            (kind,) = struct.unpack_from("<I", m, pos)
            pos += 4
            meta[key] = value(kind)
        infos = []
        for _ in range(n_tensors):
            name = string()
            (n_dims,) = struct.unpack_from("<I", m, pos)
            dims = list(struct.unpack_from(f"<{n_dims}Q", m, pos + 4))
            kind, offset = struct.unpack_from("<IQ", m, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            infos.append((name, dims, kind, offset))
        align = int(meta.get("general.alignment", 32))
        return meta, infos, -(-pos // align) * align


def read_layout(path: str | os.PathLike[str]) -> Layout:
    """Tensor names, offsets and sizes and the shape facts from the GGUF header."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    p = Path(path)
    try:
        meta, infos, data_start = _read_header(p)
        tensors = []
        tied = not any(name == "output.weight" for name, *_ in infos)
        for name, dims, kind, offset in infos:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
            n = 1
            for d in dims:
                n *= d
            layer, cls = _classify(name, tied)
            tensors.append(Tensor(name, data_start + offset, n // block * size, layer, cls))
    except (ValueError, KeyError, OSError, struct.error) as exc:
        raise BadInputError(f"{p} cannot be read as a GGUF model ({exc})",
                            "give the path of a complete .gguf file") from None
    arch = str(meta.get("general.architecture", "llama"))
    n_head = int(meta.get(f"{arch}.attention.head_count", 1) or 1)
    n_vocab = int(meta.get("tokenizer.ggml.tokens", 0))
    if not n_vocab:
        emb = next((info for info in infos if info[0] == "token_embd.weight"), None)
        n_vocab = int(emb[1][-1]) if emb is not None else 32000
    return Layout(p, p.stat().st_size, arch, int(meta.get(f"{arch}.block_count", 0)),
                  int(meta.get(f"{arch}.embedding_length", 0)), n_head,
                  int(meta.get(f"{arch}.attention.head_count_kv", n_head) or n_head), n_vocab,
                  tuple(tensors))


@dataclass
class Plan:
    mode: str                      # "resident" or "file-backed"
    budget: int
    file_size: int
    kv_bytes: int
    work_bytes: int
    always_bytes: int
    pinned: list[Tensor] = field(default_factory=list)
    streamed: dict[int, list[Tensor]] = field(default_factory=dict)
    moe: bool = False
    minimum_budget: int = 0

    @property
    def pinned_bytes(self) -> int:
        return sum(t.size for t in self.pinned)

    @property
    def streamed_bytes(self) -> int:
        return sum(t.size for ts in self.streamed.values() for t in ts)

    @property
    def window_bytes(self) -> int:
        return _window(self.streamed)

    @property
    def resident_bytes(self) -> int:
        """What the plan keeps in memory: the weights held resident, KV cache, working memory."""
        weights = self.file_size if self.mode == "resident" else self.pinned_bytes + self.window_bytes
        return weights + self.kv_bytes + self.work_bytes

    def summary(self) -> dict:
        return {"mode": self.mode, "budget": self.budget, "file_bytes": self.file_size,
                "resident_bytes": self.resident_bytes, "pinned_bytes": self.pinned_bytes,
                "streamed_bytes": self.streamed_bytes, "kv_bytes": self.kv_bytes,
                "work_bytes": self.work_bytes,
                "moe": self.moe, "minimum_budget": self.minimum_budget}


def _window(streamed: dict[int, list[Tensor]]) -> int:
    """Most streamed bytes in memory at once: the layer computing and AHEAD layers read ahead."""
    if not streamed:
        return 0
    layers = sorted(streamed)
    sizes = [sum(t.size for t in streamed[i]) for i in layers]
    n = min(len(sizes), AHEAD + 1)
    ring = sizes + sizes[:n - 1]
    return max(sum(ring[i:i + n]) for i in range(len(sizes)))


def _spread(layers: list[int]) -> list[int]:
    """*layers* in van der Corput order: every prefix is spread evenly over the model."""
    bits = max(1, (len(layers) - 1).bit_length())
    return sorted(layers, key=lambda i: (int(f"{layers.index(i):0{bits}b}"[::-1], 2), i))


def resolve_budget(setting: str, meminfo: dict[str, int] | None = None) -> int:
    """Bytes for a budget setting: "1.5G", "50%" (of RAM, or of this cgroup's limit if lower) or
    "auto" (memory available now, less a margin of a quarter, at least 1 GiB, for everything else)."""
    kind, value = parse_memory_budget(setting)
    if kind == "bytes":
        return int(value)
    info = meminfo or _meminfo()
    total = min(info["MemTotal"], _cgroup_limit() or info["MemTotal"])
    if kind == "share":
        return int(total * value)
    available = min(info["MemAvailable"], total)
    return max(0, int(available - max(1 << 30, available // 4)))


def _meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0]) * 1024
    return out


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            return int(text)
    return None


def make_plan(layout: Layout, budget: int, n_ctx: int, file_backed: bool = False,
              n_batch: int = 512) -> Plan:
    """The mode and the pinned and streamed tensors for *budget* bytes; refuses a budget that
    cannot hold the always-resident part, the KV cache and working memory."""
    kv, work = layout.kv_bytes(n_ctx), layout.work_bytes(n_batch)
    always = [t for t in layout.tensors if t.kind == "always"]
    always_bytes = sum(t.size for t in always)
    layered = [t for t in layout.tensors if t.kind in ("ffn", "expert")]
    streamed_all: dict[int, list[Tensor]] = {}
    for t in layered:
        streamed_all.setdefault(t.layer, []).append(t)
    minimum = always_bytes + kv + work + _window(streamed_all)
    plan = Plan("resident", budget, layout.file_size, kv, work, always_bytes, moe=layout.moe,
                minimum_budget=minimum)
    if not file_backed and layout.file_size + kv + work <= budget:
        plan.pinned = list(layout.tensors)
        return plan
    if budget < minimum:
        parts = "non-expert tensors" if layout.moe else "attention, norms and output"
        raise UserError(
            f"llm_memory_budget {fmt_bytes(budget)} is too small for {layout.path.name}: its "
            f"always-resident part ({parts}, {fmt_bytes(always_bytes)}), the KV cache for n_ctx "
            f"{n_ctx} ({fmt_bytes(kv)}), working memory ({fmt_bytes(work)}) and {AHEAD + 1} "
            f"streamed layers need at least {-(-minimum // MiB)}M",
            f"set llm_memory_budget to at least {-(-minimum // MiB)}M, lower n_ctx, "
            "or choose a smaller model")
    plan.mode = "file-backed"
    # Fill what is left with whole tensors (dense FFN; for MoE the experts), layers in an order
    # that leaves the streamed ones evenly spread: reading one overlaps computing pinned ones.
    streamed = {k: list(v) for k, v in streamed_all.items()}
    pinned, used = list(always), always_bytes + kv + work
    order = {layer: rank for rank, layer in enumerate(_spread(sorted(streamed_all)))}
    for t in sorted(layered, key=lambda x: (-order[x.layer], x.offset)):
        streamed[t.layer].remove(t)
        if not streamed[t.layer]:
            del streamed[t.layer]
        if used + t.size + _window(streamed) > budget:
            streamed.setdefault(t.layer, []).append(t)
            streamed[t.layer].sort(key=lambda x: x.offset)
            break
        pinned.append(t)
        used += t.size
    plan.pinned, plan.streamed = pinned, streamed
    return plan


# --- run time -------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.posix_madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.sem_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint]
_libc.sem_getvalue.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0x8000)
MADV_WILLNEED, MADV_DONTNEED, MADV_POPULATE_READ = 3, 4, 22


def _ranges(tensors: list[Tensor], file_size: int) -> list[tuple[int, int]]:
    """Page-aligned (start, length) covering *tensors*, touching ranges merged. Pages shared with a
    neighbour are kept out of streamed ranges by the caller (it subtracts the pinned ones)."""
    spans = sorted((t.offset // PAGE * PAGE, min(file_size, -(-(t.offset + t.size) // PAGE) * PAGE))
                   for t in tensors)
    out: list[list[int]] = []
    for a, b in spans:
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b - a) for a, b in out]


def _minus(ranges: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for a, n in ranges:
        pieces = [(a, a + n)]
        for h, m in holes:
            nxt = []
            for x, y in pieces:
                if h + m <= x or h >= y:
                    nxt.append((x, y))
                    continue
                if x < h:
                    nxt.append((x, h))
                if h + m < y:
                    nxt.append((h + m, y))
            pieces = nxt
        out += [(x, y - x) for x, y in pieces if y > x]
    return out


def read_bytes() -> int:
    """Bytes this process has caused to be read from storage (``/proc/self/io``)."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("read_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class NoPrefetch:
    """While active, the library at *lib_path* maps files without MAP_POPULATE and its
    ``madvise``/``posix_madvise(WILLNEED)`` calls do nothing: llama.cpp's load then reads no weight
    ahead of use. Done by pointing the library's GOT entries for those functions at filters."""

    _lock = threading.Lock()  # one load at a time patches and restores

    def __init__(self, lib_path: str):
        self.lib_path = os.path.realpath(lib_path)
        self._saved: list[tuple[int, int]] = []
        self.active = False

    def _got_entries(self) -> dict[str, list[int]]:
        from elftools.elf.elffile import ELFFile
        from elftools.elf.relocation import RelocationSection

        base = None
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and os.path.realpath(parts[5]) == self.lib_path and int(parts[2], 16) == 0:
                    base = int(parts[0].split("-")[0], 16)
                    break
        if base is None:
            return {}
        out: dict[str, list[int]] = {}
        with open(self.lib_path, "rb") as fh:
            elf = ELFFile(fh)
            first_load = min(s["p_vaddr"] for s in elf.iter_segments() if s["p_type"] == "PT_LOAD")
            for section in elf.iter_sections():
                if not isinstance(section, RelocationSection):
                    continue
                symtab = elf.get_section(section["sh_link"])
                for rel in section.iter_relocations():
                    sym = symtab.get_symbol(rel["r_info_sym"]) if rel["r_info_sym"] else None
                    if sym is not None and sym.name in ("mmap", "mmap64", "madvise", "posix_madvise"):
                        out.setdefault(sym.name, []).append(base - first_load + rel["r_offset"])
        return out

    def __enter__(self):
        self._lock.acquire()
        try:
            entries = self._got_entries()
        except Exception:  # noqa: BLE001 - a library we cannot read keeps its prefetch
            log.warning("cannot read %s; llama.cpp's whole-file prefetch stays on", self.lib_path,
                        exc_info=True)
            return self
        real_mmap, real_madvise = _libc.mmap, _libc.madvise
        real_pmadvise = _libc.posix_madvise

        @ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                          ctypes.c_int, ctypes.c_int, ctypes.c_long)
        def _mmap(addr, length, prot, flags, fd, off):
            return real_mmap(addr, length, prot, flags & ~MAP_POPULATE, fd, off)

        @ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        def _madvise(addr, length, advice):
            return 0 if advice == MADV_WILLNEED else real_madvise(addr, length, advice)

        @ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        def _pmadvise(addr, length, advice):
            return 0 if advice == MADV_WILLNEED else real_pmadvise(addr, length, advice)

        self._funcs = {"mmap": _mmap, "mmap64": _mmap, "madvise": _madvise, "posix_madvise": _pmadvise}
        for name, addrs in entries.items():
            target = ctypes.cast(self._funcs[name], ctypes.c_void_p).value
            for addr in addrs:
                page = addr // PAGE * PAGE
                _libc.mprotect(ctypes.c_void_p(page), ctypes.c_size_t(PAGE), 3)  # RELRO: make writable
                slot = ctypes.c_void_p.from_address(addr)
                self._saved.append((addr, slot.value))
                slot.value = target
        self.active = bool(entries.get("mmap") or entries.get("mmap64"))
        return self

    def __exit__(self, *exc):
        for addr, value in reversed(self._saved):
            ctypes.c_void_p.from_address(addr).value = value
        self._saved.clear()
        self._lock.release()


def _mapping_of(path: Path, size: int, other_than: int) -> int | None:
    """Where file offset 0 of llama.cpp's mapping of *path* lies (it unmaps the header after
    loading, so its first piece may start further in); *other_than* is our own mapping."""
    real = os.path.realpath(path)
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5] == real:
                lo = int(parts[0].split("-")[0], 16)
                if not other_than <= lo < other_than + size:
                    return lo - int(parts[2], 16)
    return None


class Placement:
    """Carries out a file-backed plan: pins the pinned tensors through a second mapping (mlocked
    if permitted, else read once and kept hot because nothing streamed stays behind), and follows
    compute through each ``llama_decode`` to read the next streamed layers ahead and drop the
    finished ones. Compute is followed without a Python call per node: llama.cpp's abort callback,
    which ggml's CPU backend calls after every node, is libc's ``sem_post`` on a semaphore of
    ours, so the node count is read with ``sem_getvalue``; nodes per graph are learned from the
    previous decode. ``close()`` unlocks and unmaps."""

    POLL = 0.002  # seconds between looks at the node count

    def __init__(self, plan: Plan, path: Path, n_layer: int):
        self.plan, self.path, self.n_layer = plan, Path(path), max(1, n_layer)
        self.fd = os.open(self.path, os.O_RDONLY)
        size = plan.file_size
        self.pinned_ranges = _ranges(plan.pinned, size)
        self.layer_ranges = {i: _minus(_ranges(ts, size), self.pinned_ranges)
                             for i, ts in plan.streamed.items()}
        self.layers = sorted(self.layer_ranges)
        self.locked = False
        self._addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, self.fd, 0)
        if self._addr in (None, ctypes.c_void_p(-1).value):
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), f"cannot map {self.path}")
        self._llama_addr: int | None = None
        self._sem = (ctypes.c_long * 8)()  # a sem_t (32 bytes on glibc), 8-aligned
        _libc.sem_init(self._sem, 0, 0)
        self.nodes = 34 * self.n_layer + 16  # a llama-like guess until the first decode says
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._ended = threading.Event()
        self._ahead: set[int] = set()
        self._current = -1
        self.layer_events = 0  # layer changes seen while following compute
        self._buf = bytearray(4 * MiB)
        self._populate = True
        self._thread = threading.Thread(target=self._run, name="mneme-flash", daemon=True)
        self._closed = False

    @property
    def counter(self) -> int:
        """The address to hand llama.cpp as the abort callback's data (``sem_post``'s sem)."""
        return ctypes.addressof(self._sem)

    @staticmethod
    def callback_address() -> int:
        return ctypes.cast(_libc.sem_post, ctypes.c_void_p).value

    def _count(self) -> int:
        v = ctypes.c_int()
        _libc.sem_getvalue(self._sem, ctypes.byref(v))
        return v.value

    def start(self) -> None:
        """After llama.cpp has mapped the file: pin, then start the reader thread."""
        self._llama_addr = _mapping_of(self.path, self.plan.file_size, self._addr)
        if self._llama_addr is None:
            log.warning("llama.cpp's mapping of %s not found; streamed pages cannot be dropped",
                        self.path)
        self.locked = True
        for start, length in self.pinned_ranges:
            os.posix_fadvise(self.fd, start, length, os.POSIX_FADV_WILLNEED)
        for start, length in self.pinned_ranges:
            if _libc.mlock(ctypes.c_void_p(self._addr + start), ctypes.c_size_t(length)) != 0:
                self.locked = False
                break
        if not self.locked:  # read once into the page cache in large sequential reads
            for start, length in self.pinned_ranges:
                self._read(start, length)
        for i in self.layers:  # whatever the load left of streamed layers goes
            self._drop(i)
        self._thread.start()
        self._queue.put("next")

    def begin_decode(self) -> None:
        _libc.sem_init(self._sem, 0, 0)  # compute is not running: safe to reset
        self._ended.clear()
        self._queue.put("follow")

    def end_decode(self) -> None:
        n = self._count()
        if n > self.n_layer:
            self.nodes = n
        self._ended.set()

    def _read(self, start: int, length: int) -> None:
        for off in range(start, start + length, len(self._buf)):
            os.preadv(self.fd, [memoryview(self._buf)[:min(len(self._buf), start + length - off)]], off)

    def _read_ahead(self, layer: int) -> None:
        """Into llama.cpp's mapping ahead of compute: MADV_POPULATE_READ reads in large requests
        and maps the pages, no copy and no page faults left for compute (Linux 5.14+); else
        large sequential reads into the page cache (readahead hints alone arrive late)."""
        for start, length in self.layer_ranges.get(layer, ()):
            os.posix_fadvise(self.fd, start, length, os.POSIX_FADV_WILLNEED)
        for start, length in self.layer_ranges.get(layer, ()):
            if self._populate and self._llama_addr is not None and _libc.madvise(
                    ctypes.c_void_p(self._llama_addr + start), ctypes.c_size_t(length),
                    MADV_POPULATE_READ) == 0:
                continue
            self._populate = False
            self._read(start, length)

    def _drop(self, layer: int) -> None:
        for start, length in self.layer_ranges.get(layer, ()):
            if self._llama_addr is not None:
                _libc.madvise(ctypes.c_void_p(self._llama_addr + start), ctypes.c_size_t(length),
                              MADV_DONTNEED)
            os.posix_fadvise(self.fd, start, length, os.POSIX_FADV_DONTNEED)

    def _move_to(self, layer: int) -> None:
        """Compute is at *layer*: keep it and the AHEAD streamed layers after it (wrapping to the
        next token's first ones), drop the rest."""
        n = len(self.layers)
        if not n or layer == self._current:
            return
        self._current = layer
        self.layer_events += 1
        k = next((j for j, x in enumerate(self.layers) if x >= layer), n)
        want = [self.layers[(k + j) % n] for j in range(min(n, AHEAD + 1))]
        for x in list(self._ahead):
            if x not in want:
                self._drop(x)
                self._ahead.discard(x)
        for x in want:
            if x not in self._ahead:
                self._read_ahead(x)
                self._ahead.add(x)

    def _run(self) -> None:
        while True:
            msg = self._queue.get()
            if msg is None:
                return
            if msg == "follow":
                while not self._ended.is_set():
                    self._move_to(min(self.n_layer - 1, self._count() * self.n_layer // self.nodes))
                    self._ended.wait(self.POLL)
            self._move_to(0)  # the next token starts at the first layer

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        _libc.munmap(ctypes.c_void_p(self._addr), ctypes.c_size_t(self.plan.file_size))  # unlocks
        os.close(self.fd)
