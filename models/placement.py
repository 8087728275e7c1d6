"""Flash offload at run time: carries out a file-backed plan (``mneme.models.flash``).

``Placement`` pins the plan's pinned bytes through a second mapping of the GGUF (mlocked) and,
following compute through each decode, reads the next layers' streamed bytes ahead and drops the
finished ones; ``NoPrefetch`` turns llama.cpp's whole-file prefetch off while a model loads;
``read_bytes`` and ``cached_bytes`` measure. Nothing here imports llama_cpp.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import queue
import threading
import time
from collections import OrderedDict
from pathlib import Path

from mneme.models.flash import AHEAD, MiB, PAGE, Plan, Tensor

log = logging.getLogger("mneme.flash")


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
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0x8000)
MADV_RANDOM, MADV_WILLNEED, MADV_DONTNEED = 1, 3, 4


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


def _expert_units(plan: Plan, file_size: int, pinned: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Each routed expert's page ranges, layer by layer and expert by expert: its slice of each
    of the layer's expert tensors (experts are the outermost dimension, so a slice is
    contiguous), rounded inward to pages, so dropping one never touches a neighbour's or a
    pinned page."""
    n = max(1, plan.n_expert)
    by_layer: dict[int, list[Tensor]] = {}
    for t in plan.experts:
        by_layer.setdefault(t.layer, []).append(t)
    units = []
    for layer in sorted(by_layer):
        for e in range(n):
            ranges = []
            for t in by_layer[layer]:
                per = t.size // n
                a = -(-(t.offset + e * per) // PAGE) * PAGE
                b = min(file_size, (t.offset + (e + 1) * per) // PAGE * PAGE)
                if b > a:
                    ranges.append((a, b - a))
            units.append(_minus(ranges, pinned))
    return units


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


def cached_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of the file at *path* in the page cache now, whoever maps or read them
    (``mincore`` over a mapping of our own, which reads nothing)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if not size:
            return 0
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"cannot map {path}")
        try:
            vec = (ctypes.c_ubyte * (-(-size // PAGE)))()
            if _libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore on {path}")
            pages = bytes(vec)
            return (len(pages) - pages.count(0)) * PAGE
        finally:
            _libc.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(size))
    finally:
        os.close(fd)


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

    # Seconds between looks at the node count. With the reads queued ahead of compute (a look
    # only moves the window on) 2 ms is enough; the one CI failure seen with 0.5 ms looks was the
    # test's model file still dirty in the page cache (BENCHMARKS.md, "Fifth look").
    POLL = 0.002

    def __init__(self, plan: Plan, path: Path, n_layer: int):
        self.plan, self.path, self.n_layer = plan, Path(path), max(1, n_layer)
        self.fd = os.open(self.path, os.O_RDONLY)
        size = plan.file_size
        self.pinned_ranges = _ranges(plan.pinned, size)

        def unpinned(tensors: list[Tensor]) -> list[tuple[int, int]]:
            return _minus(_ranges(tensors, size), self.pinned_ranges)

        self.layer_ranges = {i: unpinned(ts) for i, ts in plan.streamed.items()}
        self.layers = sorted(self.layer_ranges)
        self.units = _expert_units(plan, size, self.pinned_ranges)
        self.sparse_ranges = unpinned(plan.sparse)
        # Routed experts, when the router's choice is seen (``route``): unit of (layer, expert
        # 0) by layer, each layer's expert tensors' pages, the units held, least recently used
        # first, and their bytes.
        expert_layers = sorted({t.layer for t in plan.experts})
        self._first_unit = {layer: i * max(1, plan.n_expert) for i, layer in enumerate(expert_layers)}
        self._expert_pages = {layer: unpinned([t for t in plan.experts if t.layer == layer])
                              for layer in expert_layers}
        self._unit_bytes = [sum(n for _, n in unit) for unit in self.units]
        self._held: OrderedDict[int, None] = OrderedDict()
        self._held_bytes = 0
        self._random: set[int] = set()
        self.routed = 0               # router choices acted on
        self._hand = 0
        self._stuck = [0] * len(self.units)  # bytes of each expert its last drop left
        self._next_trim = 0.0
        self._pagemap = os.open("/proc/self/pagemap", os.O_RDONLY) if self.units else None
        self.evicted = 0              # experts dropped from the cache
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
        # Each streamed layer's bytes, and what the reader may hold at once.
        self._sizes = {i: sum(n for _, n in r) for i, r in self.layer_ranges.items()}
        self.room = plan.ahead_bytes
        self._buf = bytearray(4 * MiB)
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
        for unit in self.units:
            self._evict(unit)
        # A row of the token embedding is read per token: the page it is on, not the 8 MiB the
        # kernel would read around it (other tensors' pages, which the plan does not count:
        # routed experts the cache did not choose, a dense model's next layers), and the rows
        # go after each pass (``_run``), so they do not pile up outside the budget.
        self._evict(self.sparse_ranges)
        self._advise(self.sparse_ranges, MADV_RANDOM)
        # The header (metadata, vocabulary) llama.cpp has read and copied: out of the page cache.
        header = min((t.offset for t in self.plan.pinned), default=0) // PAGE * PAGE
        if header:
            os.posix_fadvise(self.fd, 0, header, os.POSIX_FADV_DONTNEED)
        # Kernel readahead stays on around streamed pages: compute runs far faster than storage,
        # and where it catches the reader up its faults must read in large requests. With
        # MADV_RANDOM each fault read one 4 KiB page (0.5x budget: 0.07 tok/s against 1.01 with
        # readahead, the same bytes read per token; third round, when the reader lagged).
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

    def _hint(self, layer: int) -> None:
        """Queue the reads of *layer*'s ranges: the kernel reads them asynchronously into the page
        cache, and compute, when it gets there, maps them with minor faults or waits for the read
        already under way (no second read)."""
        for start, length in self.layer_ranges.get(layer, ()):
            os.posix_fadvise(self.fd, start, length, os.POSIX_FADV_WILLNEED)

    def _drop(self, layer: int) -> None:
        self._evict(self.layer_ranges.get(layer, ()))

    def _move_to(self, layer: int) -> None:
        """Compute is at *layer*: keep it and as many streamed layers after it (wrapping to the
        next pass's first ones) as the reader's room holds, drop the rest, and queue the reads
        of the layers newly kept. The reads are queued, not waited for: the disk, the slowest
        part, always has the next layers to read, whenever the reader looks. (Reading one layer
        ahead and waiting for it, compute caught the reader up in every layer and read most of
        the streamed bytes through its own faults: 5.1-5.8 against 7.3-8.2 tok/s at a 1.0x
        budget, BENCHMARKS.md, "Fifth look".)"""
        n = len(self.layers)
        if not n or layer == self._current:
            return
        self._current = layer
        self.layer_events += 1
        k = next((j for j, x in enumerate(self.layers) if x >= layer), 0)
        keep, held = [], 0
        for j in range(n):
            x = self.layers[(k + j) % n]
            if len(keep) > AHEAD and held + self._sizes[x] > self.room:
                break
            keep.append(x)
            held += self._sizes[x]
        for x in list(self._ahead):  # room first: what is behind compute goes
            if x not in keep:
                self._drop(x)
                self._ahead.discard(x)
        for x in keep:
            if x not in self._ahead:
                self._hint(x)
                self._ahead.add(x)

    def _run(self) -> None:
        while True:
            msg = self._queue.get()
            if msg is None:
                return
            if isinstance(msg, threading.Event):  # settle(): a look at the expert cache now
                self._next_trim = 0.0
                if self.units:
                    # Every expert is tried again: pages a look could not drop for a while
                    # (being read, or dirty in a file just written) were taken for pages it can
                    # never drop (a folio shared with a pinned page).
                    self._stuck = [0] * len(self.units)
                    self._trim()
                msg.set()
                continue
            if msg == "follow":
                while not self._ended.is_set():
                    self._move_to(min(self.n_layer - 1, self._count() * self.n_layer // self.nodes))
                    self._ended.wait(self.POLL)
            self._move_to(0)  # the next token starts at the first layer
            if msg == "follow":
                self._evict(self.sparse_ranges)
                if self.units:
                    self._trim()

    def settle(self, wait: bool = True) -> None:
        """After an answer: the expert cache (MoE) is brought within its room now, not at the
        next look (an answer's last passes may have grown it)."""
        done = threading.Event()
        self._queue.put(done)
        if wait:
            done.wait()

    def _resident(self, units: list[list[tuple[int, int]]] | None = None) -> list[int]:
        """Bytes of each expert (of *units*, default all) in the page cache now (``mincore``
        over our mapping: ~80 ns a page)."""
        units = self.units if units is None else units
        lo = min((a for unit in units for a, _ in unit), default=0)
        hi = max((a + n for unit in units for a, n in unit), default=0)
        if hi <= lo:
            return [0] * len(units)
        vec = (ctypes.c_ubyte * ((hi - lo) // PAGE))()
        if _libc.mincore(ctypes.c_void_p(self._addr + lo), ctypes.c_size_t(hi - lo), vec) != 0:
            return [0] * len(units)
        pages = bytes(vec)
        return [sum(n // PAGE - pages[(a - lo) // PAGE:(a - lo + n) // PAGE].count(0) for a, n in unit) * PAGE
                for unit in units]

    def _referenced(self, unit: list[tuple[int, int]]) -> bool:
        """Has compute touched the expert since its pages were last unmapped? A present page
        table entry in llama.cpp's mapping (``/proc/self/pagemap``, bit 63) says so."""
        if self._llama_addr is None:
            return False
        for start, length in unit:
            first = (self._llama_addr + start) // PAGE
            data = os.pread(self._pagemap, 8 * (length // PAGE), 8 * first)
            if data and max(data[7::8]) & 0x80:
                return True
        return False

    def _advise(self, ranges: list[tuple[int, int]], advice: int) -> None:
        """``madvise`` *ranges* (file offsets) of llama.cpp's mapping, when it was found."""
        if self._llama_addr is not None:
            for start, length in ranges:
                _libc.madvise(ctypes.c_void_p(self._llama_addr + start), ctypes.c_size_t(length), advice)

    def _evict(self, unit) -> None:
        """Out of llama.cpp's mapping and out of the page cache: the ranges *unit*."""
        self._advise(unit, MADV_DONTNEED)
        for start, length in unit:
            os.posix_fadvise(self.fd, start, length, os.POSIX_FADV_DONTNEED)

    def route(self, layer: int, experts) -> None:
        """The router of *layer* has chosen *experts* (ids, any repeats) for the pass computing
        now; called on compute's thread before it reads them. Those not held are read at once,
        in one request each (the kernel reads them while compute waits on the first pages), and
        the least recently used are dropped while the held ones exceed the plan's expert room
        (never the layer's own). Compute's faults on this layer's experts read no further than
        the page (``MADV_RANDOM``): what is read is exactly what the router chose. A model whose
        router is never seen keeps the kernel's readahead and the look of ``_trim``."""
        first = self._first_unit.get(layer)
        if first is None:
            return
        if layer not in self._random and self._llama_addr is not None:
            self._advise(self._expert_pages[layer], MADV_RANDOM)
            self._random.add(layer)
        n = max(1, self.plan.n_expert)
        wanted = {first + e for e in experts if 0 <= e < n}
        for u in wanted:
            if u in self._held:
                self._held.move_to_end(u)
                continue
            for start, length in self.units[u]:
                os.posix_fadvise(self.fd, start, length, os.POSIX_FADV_WILLNEED)
            self._held[u] = None
            self._held_bytes += self._unit_bytes[u]
        while self._held_bytes > self.plan.expert_room:
            u = next(iter(self._held))
            if u in wanted:
                break
            del self._held[u]
            self._held_bytes -= self._unit_bytes[u]
            self._evict(self.units[u])
            self.evicted += 1
        self.routed += 1

    def _trim(self) -> None:
        """MoE whose router is not seen (``route``), after a pass: the experts in the page cache are held within the plan's expert
        room, less what one token may add (its experts in every layer, and readahead), by
        CLOCK: going round the experts, one touched since the hand last passed it is unmapped
        and kept (a second chance), an untouched one is dropped. Experts used again and again
        stay in memory, as under plain mmap's LRU, but within a bound of Mneme's own. A look
        costs ~80 ns per page of the file, so it is taken at most a tenth of the time: between
        looks the cache may grow past its room by what compute reads (a prompt pass may use
        every expert). Pages the kernel keeps in a large folio shared with a pinned page cannot
        be dropped and are not tried again."""
        now = time.monotonic()
        if now < self._next_trim or self.routed:
            return
        resident = self._resident()
        total = sum(resident)
        room = self.plan.expert_room - self.plan.token_expert_bytes
        n, steps = len(self.units), 0
        while total > room and steps < 2 * n:
            i, self._hand, steps = self._hand, (self._hand + 1) % n, steps + 1
            if resident[i] <= self._stuck[i]:
                continue
            if self._referenced(self.units[i]):
                self._advise(self.units[i], MADV_DONTNEED)
                continue
            self._evict(self.units[i])
            self._stuck[i] = self._resident([self.units[i]])[0]
            total -= resident[i] - self._stuck[i]
            self.evicted += 1
        self._next_trim = time.monotonic() + 9 * (time.monotonic() - now)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        _libc.munmap(ctypes.c_void_p(self._addr), ctypes.c_size_t(self.plan.file_size))  # unlocks
        os.close(self.fd)
        if self._pagemap is not None:
            os.close(self._pagemap)
