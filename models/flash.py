"""Flash offload: how a GGUF's weights are held within the LLM's memory budget.

``read_layout`` reads the tensor table from the GGUF header (the ``gguf`` package); ``make_plan``
chooses the mode:

- ``resident``: model + KV cache + working memory fit the budget; llama.cpp's defaults (mmap with
  its whole-file prefetch, CPU weight repacking) are kept, they are the fastest.
- ``file-backed``: the weights stay in the page cache of the file, repacking off, the whole-file
  prefetch off. Dense: the tensors outside the layers are pinned (norms, output), and of each
  layer's weight matrices (attention and FFN) all but an equal tail, cut at a page boundary, as
  large as the budget allows. The tails stream layer by layer: read ahead of compute and dropped
  behind it, so streamed pages never push pinned ones out. Per token that reads about the
  streamed bytes, (model - budget) plus a window of a few layers' tails. MoE: every tensor but the routed
  experts is pinned; the experts share the rest of the budget as a cache of the ones used
  last (a token uses a few, known once the router has run, and often the same again): each
  layer's routed experts are read the moment the router has chosen them, exactly those, and
  the least recently used ones leave to make room.

``mneme.models.placement`` carries a plan out at run time. Nothing here imports llama_cpp.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from mneme.core.config import parse_memory_budget
from mneme.core.errors import BadInputError, UserError

log = logging.getLogger("mneme.flash")

MiB = 1 << 20
EXPERT = re.compile(r"_exps\.")                       # ffn_{gate,up,down}_exps: routed experts
LAYER = re.compile(r"^blk\.(\d+)\.")
AHEAD = 1                                             # layers read ahead of compute, at the least
# What compute may fault in itself past the reader's last look (it looks every 2 ms): a small
# model computes a few layers in that time (LAG layers' tails, measured on the packaged model in
# tests/test_flash.py); a large one is held back by the disk, which reads only a few MB in that
# time (LAG_BYTES). Room for the lesser is kept in the window; the reader reads ahead into it
# while compute stays behind (mneme.models.placement).
LAG, LAG_BYTES = 3, 8 * MiB
RUNTIME_BYTES = 64 * MiB  # llama.cpp's own beside its buffers: ~48 MB at load, ~19 MB more at first decode
# Tokens per forward pass (llama.cpp's n_ubatch). Its activations grow with n_ubatch * n_head *
# n_ctx (and its reserved compute buffer with n_ubatch * n_vocab). Resident keeps
# llama.cpp's 512 (fastest prompt reading); file-backed takes 128: prompt reading stays
# compute-bound (a pass over 128 tokens computes far longer than the streamed weights take to
# read), decoding passes one token or a few guessed ones, and the buffer is a quarter the size.
# n_batch is set to the same: one graph per llama_decode, as the placement follows compute by
# counting a graph's nodes.
RESIDENT_UBATCH, FILE_BACKED_UBATCH = 512, 128
MAX_OUTPUTS = 16                                      # logits rows a verifying pass asks for
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
    kind: str        # "always", "layer" (a layer's attention or FFN matrix), "expert" (MoE, per
                     # layer), "sparse" (rows)


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
    n_ff: int = 0
    key_length: int = 0      # per head; 0: n_embd / n_head
    value_length: int = 0
    readahead: int = 0       # the kernel's readahead for the file's device, bytes
    n_expert: int = 0
    n_expert_used: int = 0

    @property
    def moe(self) -> bool:
        return any(t.kind == "expert" for t in self.tensors)

    def kv_bytes(self, n_ctx: int) -> int:
        """f16 K and V for every layer and position (llama.cpp's default cache type)."""
        head_dim = self.n_embd // max(1, self.n_head)
        k, v = self.key_length or head_dim, self.value_length or head_dim
        return 2 * self.n_layer * _ctx_padded(n_ctx) * self.n_head_kv * (k + v)

    def work_bytes(self, n_ubatch: int = RESIDENT_UBATCH, n_ctx: int = 4096) -> int:
        """What llama.cpp touches beside weights and KV cache: activations of a pass over
        n_ubatch tokens (attention scores over the whole context, FFN and residual rows), logits
        of MAX_OUTPUTS tokens twice (compute and output buffers) and the runtime's own
        allocations (vocabulary, threads). Its compute buffer is reserved for a worst-case graph
        with logits for all n_ubatch tokens (4 * n_ubatch * n_vocab bytes: 128 MiB for a 262k
        vocabulary at n_ubatch 128), but no pass Mneme runs asks for them, and untouched pages
        cost no memory. Checked against llama.cpp's measured growth in tests/test_flash.py."""
        compute = 4 * n_ubatch * (self.n_head * _ctx_padded(n_ctx) + 4 * self.n_embd + 2 * self.n_ff)
        return compute + 2 * 4 * MAX_OUTPUTS * self.n_vocab + RUNTIME_BYTES


def _ctx_padded(n_ctx: int) -> int:
    return -(-n_ctx // 256) * 256  # llama.cpp pads the KV cache to 256 cells


def _classify(name: str, tied: bool) -> tuple[int | None, str]:
    m = LAYER.match(name)
    layer = int(m.group(1)) if m else None
    if EXPERT.search(name):
        return layer, "expert"
    if name.startswith("token_embd."):
        return None, "always" if tied else "sparse"  # untied: one row read per token
    # A layer's weight matrices: read once per pass, in the layer's turn, so a dense plan can
    # stream them. Attention is among them: pinning it (the first rounds) put a floor under the
    # budget that a 1.5B model's 0.5x budget could not meet (BENCHMARKS.md, "Sixth look").
    if layer is not None and (".ffn_" in name or ".attn_" in name) and name.endswith(".weight") \
            and "norm" not in name and "_inp" not in name and "_shexp" not in name:
        return layer, "layer"
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
                  tuple(tensors), int(meta.get(f"{arch}.feed_forward_length", 0)),
                  int(meta.get(f"{arch}.attention.key_length", 0)),
                  int(meta.get(f"{arch}.attention.value_length", 0)), readahead_bytes(p),
                  int(meta.get(f"{arch}.expert_count", 0)), int(meta.get(f"{arch}.expert_used_count", 0)))


def readahead_bytes(path: Path) -> int:
    """How far past a faulted page the kernel reads (the file's device's ``read_ahead_kb``;
    8 MiB when it cannot be found: what fast disks are set to)."""
    dev = path.stat().st_dev
    name = f"{os.major(dev)}:{os.minor(dev)}"
    for sysfs in (f"/sys/class/bdi/{name}/read_ahead_kb", f"/sys/dev/block/{name}/queue/read_ahead_kb",
                  f"/sys/dev/block/{name}/../queue/read_ahead_kb"):
        try:
            return int(Path(sysfs).read_text()) * 1024
        except (OSError, ValueError):
            continue
    return 8 * MiB


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
    n_ubatch: int = FILE_BACKED_UBATCH
    readahead: int = 0
    experts: list[Tensor] = field(default_factory=list)  # MoE: routed experts, held in a cache
    sparse: list[Tensor] = field(default_factory=list)   # read a row per token (untied embedding)
    expert_room: int = 0                                 # ... of this many bytes
    n_expert: int = 0
    n_expert_used: int = 0

    @property
    def pinned_bytes(self) -> int:
        return sum(t.size for t in self.pinned)

    @property
    def streamed_bytes(self) -> int:
        return sum(t.size for ts in self.streamed.values() for t in ts)

    @property
    def token_expert_bytes(self) -> int:
        """MoE: what one token may add to the expert cache."""
        return _token_experts(self.experts, self.n_expert, self.n_expert_used, self.readahead)

    @property
    def window_bytes(self) -> int:
        return _window(self.streamed, self.readahead)

    @property
    def ahead_bytes(self) -> int:
        """Of the window, what the reader may hold: the layer computing and those read ahead."""
        return _ahead(self.streamed)

    @property
    def resident_bytes(self) -> int:
        """What the plan keeps in memory: the weights held resident, KV cache, working memory."""
        weights = self.file_size if self.mode == "resident" else \
            self.pinned_bytes + self.window_bytes + self.expert_room
        return weights + self.kv_bytes + self.work_bytes

    def summary(self) -> dict:
        return {"mode": self.mode, "budget": self.budget, "file_bytes": self.file_size,
                "resident_bytes": self.resident_bytes, "pinned_bytes": self.pinned_bytes,
                "streamed_bytes": self.streamed_bytes, "kv_bytes": self.kv_bytes,
                "work_bytes": self.work_bytes, "n_ubatch": self.n_ubatch,
                "moe": self.moe, "expert_cache_bytes": self.expert_room,
                "minimum_budget": self.minimum_budget}


def _window(streamed: dict[int, list[Tensor]], readahead: int) -> int:
    """Most streamed bytes in memory at once: what the reader holds (``_ahead``) and what the
    kernel reads past the last page compute touched when it faults beyond the reader: a readahead
    window and the asynchronous one it starts, twice *readahead* (its faults must read in large
    requests, so readahead stays on; measured in tests/test_flash.py)."""
    return _ahead(streamed) + 2 * readahead if streamed else 0


def _ahead(streamed: dict[int, list[Tensor]]) -> int:
    """What the reader holds at most: the largest AHEAD + 1 consecutive layers' streamed bytes
    (the layer computing and the next) and the lag (LAG, LAG_BYTES). It fills all of it, with
    as many layers after compute's as fit."""
    if not streamed:
        return 0
    sizes = [sum(t.size for t in streamed[i]) for i in sorted(streamed)]

    def most(n: int) -> int:
        n = min(len(sizes), n)
        ring = sizes + sizes[:n - 1]
        return max(sum(ring[i:i + n]) for i in range(len(sizes)))

    return most(AHEAD + 1) + min(most(LAG), LAG_BYTES)


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


def make_plan(layout: Layout, budget: int, n_ctx: int, file_backed: bool = False) -> Plan:
    """The mode and the pinned and streamed tensors for *budget* bytes; refuses a budget that
    cannot hold the always-resident part, the KV cache and working memory."""
    kv, work = layout.kv_bytes(n_ctx), layout.work_bytes(FILE_BACKED_UBATCH, n_ctx)
    # MoE: every tensor but the routed experts is pinned (attention and a dense FFN layer among
    # them); the experts share what is left, as a cache (mneme.models.placement keeps the ones
    # in use).
    always = [t for t in layout.tensors if t.kind == "always" or (layout.moe and t.kind == "layer")]
    always_bytes = sum(t.size for t in always)
    layered = [t for t in layout.tensors if t.kind == ("expert" if layout.moe else "layer")]
    streamed_all: dict[int, list[Tensor]] = {}
    for t in layered:
        streamed_all.setdefault(t.layer, []).append(t)
    held = _expert_floor(streamed_all) if layout.moe else _window(streamed_all, layout.readahead)
    minimum = always_bytes + kv + work + held
    plan = Plan("resident", budget, layout.file_size, kv, work, always_bytes, moe=layout.moe,
                minimum_budget=minimum, readahead=layout.readahead, n_expert=layout.n_expert,
                n_expert_used=layout.n_expert_used)
    plan.sparse = [t for t in layout.tensors if t.kind == "sparse"]
    resident_work = layout.work_bytes(RESIDENT_UBATCH, n_ctx)
    if not file_backed and layout.file_size + kv + resident_work <= budget:
        plan.pinned, plan.work_bytes, plan.n_ubatch = list(layout.tensors), resident_work, RESIDENT_UBATCH
        return plan
    if budget < minimum:
        parts = "non-expert tensors" if layout.moe else "norms and output"
        held_text = "every expert of one layer (a prompt pass may use them all)" if layout.moe \
            else f"{AHEAD + 1} streamed layers"
        raise UserError(
            f"llm_memory_budget {fmt_bytes(budget)} is too small for {layout.path.name}: its "
            f"always-resident part ({parts}, {fmt_bytes(always_bytes)}), the KV cache for n_ctx "
            f"{n_ctx} ({fmt_bytes(kv)}), working memory ({fmt_bytes(work)}) and {held_text} "
            f"need at least {-(-minimum // MiB)}M",
            f"set llm_memory_budget to at least {-(-minimum // MiB)}M, lower n_ctx, "
            "or choose a smaller model")
    if layout.moe:
        plan.mode, plan.pinned, plan.experts = "file-backed", always, layered
        plan.expert_room = budget - always_bytes - kv - work
        return plan
    plan.mode = "file-backed"
    # Every layer streams at most the same number of bytes, the tail of its matrices in file
    # order, cut at a page boundary, and pins the rest: the read-ahead window
    # (AHEAD + 1 layers' streamed bytes and the lag) is then the smallest it can be, so the most is pinned
    # and the least read per token. The smallest cap that fits is found by bisection.
    per_layer = {i: sorted(ts, key=lambda t: t.offset) for i, ts in streamed_all.items()}
    room = budget - always_bytes - kv - work

    def split(cap: int) -> tuple[list[Tensor], dict[int, list[Tensor]]]:
        pinned, streamed = [], {}
        for i, ts in per_layer.items():
            left, tails = cap, []
            for t in reversed(ts):
                if left <= 0:
                    pinned.append(t)
                elif t.size <= left:
                    tails.append(t)
                    left -= t.size
                else:
                    end = -(-(t.offset + t.size - left) // PAGE) * PAGE  # streams at most `left`
                    head, tail = _cut(t, end)
                    pinned += [head] if head else []
                    tails += [tail] if tail else []
                    left = 0
            if tails:
                streamed[i] = sorted(tails, key=lambda t: t.offset)
        return pinned, streamed

    def fits(cap: int) -> bool:
        pinned, streamed = split(cap)
        return sum(t.size for t in pinned) + _window(streamed, layout.readahead) <= room

    lo, hi = 0, max((sum(t.size for t in ts) for ts in per_layer.values()), default=0)
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    pinned, streamed = split(hi)
    # What page rounding left of the budget holds the leading pages of streamed tails (a head
    # pinned never grows the window, so every step stays within the budget).
    used = always_bytes + kv + work + sum(t.size for t in pinned)
    for t in sorted((x for ts in streamed.values() for x in ts), key=lambda x: x.offset):
        head, tail = _cut(t, (t.offset + min(t.size, budget - used - _window(streamed, layout.readahead))) // PAGE * PAGE)
        if head is None or head.size < PAGE:
            continue
        rest = [x for x in streamed[t.layer] if x is not t] + ([tail] if tail else [])
        if rest:
            streamed[t.layer] = sorted(rest, key=lambda x: x.offset)
        else:
            del streamed[t.layer]
        pinned.append(head)
        used += head.size
    plan.pinned, plan.streamed = list(always) + pinned, streamed
    return plan


def _token_experts(experts: list[Tensor], n_expert: int, n_used: int, readahead: int) -> int:
    """What one token may add to an expert cache: its experts in every layer, and readahead."""
    return max(1, n_used) * sum(t.size for t in experts) // max(1, n_expert) + 2 * readahead


def _expert_floor(experts: dict[int, list[Tensor]]) -> int:
    """The smallest expert cache: every expert of the largest layer. A token uses a few, but a
    pass over a prompt's 128 tokens may route to all of them, and the layer computing keeps
    what it uses."""
    return max((sum(t.size for t in ts) for ts in experts.values()), default=0)


def _cut(t: Tensor, end: int) -> tuple[Tensor | None, Tensor | None]:
    """*t* split at file offset *end*: the head before it, the tail from it (None when empty)."""
    end = min(max(end, t.offset), t.offset + t.size)
    head = Tensor(t.name, t.offset, end - t.offset, t.layer, t.kind) if end > t.offset else None
    tail = Tensor(t.name, end, t.offset + t.size - end, t.layer, t.kind) \
        if end < t.offset + t.size else None
    return head, tail
