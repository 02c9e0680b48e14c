"""Caches as safetensors payloads, written and read as streams.

The same byte layout crosses the wire (chunked gRPC streams) and lands on disk
(``<id>.safetensors``): an 8-byte header length, a JSON header and the raw
tensor bytes, so any safetensors reader opens a dump. Writing walks the
tensors one at a time and reading fills preallocated tensors chunk by chunk,
so a transfer needs no memory beyond the cache itself (no intermediate copy of
the whole payload, whatever its size). Nothing here ever unpickles.

Copies are what a transfer costs (a memory copy of a large cache runs at a
few GB/s), so the hot paths copy as little as they can: payloads go out as
views of the tensors' own memory, files are written from those views and read
straight into the destination tensors. Received tensors are allocated through
numpy, whose large allocations are backed by transparent huge pages (torch's
own allocator faults them in 4 KiB at a time, which cost as much as the copy).

A crc32 (zlib's runs at ~1.3 GB/s on one core here) would otherwise cost as
much as the rest of a transfer, so it runs beside it: the payload is
checksummed in stripes of a fixed size on a small thread pool (the GIL is
released) while the next bytes are received or read, and the stripes' crcs are
combined with the CRC-32 algebra (:func:`crc32_combine`) into the one of the
whole payload. Where the system has libdeflate, its crc32 (the same checksum,
~2.5x faster) is used instead of zlib's.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import errno
import functools
import hashlib
import json
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from services.actmem.models import KV, Fingerprint
from shared.errors import FailedPrecondition, InvalidArgument, ResourceExhausted

TORCH_TO_ST = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
ST_TO_TORCH = {v: k for k, v in TORCH_TO_ST.items()}
DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
NAME_TO_DTYPE = {v: k for k, v in DTYPE_NAMES.items()}
_ALIGN = 8
# A header describes 2 tensors per layer; even a 200-layer model stays far below this.
MAX_HEADER_BYTES = 1024 * 1024


class CorruptPayload(FailedPrecondition):
    """A payload (stream or file) that is not the cache it claims to be."""

    default_reason = "CORRUPT_CACHE"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # safetensors name: F32, F16, BF16
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * ST_TO_TORCH[self.dtype].itemsize


def specs_of(kv: KV) -> list[TensorSpec]:
    out = []
    for i, (k, v) in enumerate(kv):
        out.append(TensorSpec(f"layers.{i}.keys", TORCH_TO_ST[k.dtype], tuple(k.shape)))
        out.append(TensorSpec(f"layers.{i}.values", TORCH_TO_ST[v.dtype], tuple(v.shape)))
    return out


def expected_specs(fp: Fingerprint, num_tokens: int) -> list[TensorSpec]:
    """The only tensor layout a cache of ``num_tokens`` for this model may have."""
    st = TORCH_TO_ST[NAME_TO_DTYPE[fp.dtype]]
    shape = (1, fp.num_kv_heads, num_tokens, fp.head_dim)
    return [TensorSpec(f"layers.{i}.{part}", st, shape) for i in range(fp.num_layers) for part in ("keys", "values")]


def encode_header(specs: list[TensorSpec]) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt", "producer": "memos-actmem"}}
    offset = 0
    for s in specs:
        header[s.name] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [offset, offset + s.nbytes]}
        offset += s.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    # safetensors pads the header with spaces so that tensor data is 8-byte aligned.
    raw += b" " * (-len(raw) % _ALIGN)
    return struct.pack("<Q", len(raw)) + raw


def payload_size(specs: list[TensorSpec]) -> int:
    return len(encode_header(specs)) + sum(s.nbytes for s in specs)


def _byte_view(t: torch.Tensor) -> memoryview:
    """The tensor's bytes without copying (it must be a contiguous CPU tensor)."""
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def _array(view: memoryview) -> np.ndarray:
    """The numpy array a :func:`_byte_view` shows."""
    return view.obj  # type: ignore[return-value]


def empty_tensor(spec: TensorSpec) -> torch.Tensor:
    """An uninitialised CPU tensor for ``spec``, in memory that is cheap to fill.

    numpy asks for transparent huge pages on large allocations and torch does not: filling
    a fresh torch tensor takes a page fault every 4 KiB, which on a VM costs as much as
    the copy itself. The tensor owns the array (nothing else refers to it)."""
    dtype = ST_TO_TORCH[spec.dtype]
    nbytes = spec.nbytes
    if nbytes == 0:
        return torch.empty(spec.shape, dtype=dtype)
    return torch.from_numpy(np.empty(nbytes, dtype=np.uint8)).view(dtype).view(spec.shape)


# -- crc32 of a payload, in stripes on a thread pool -----------------------------------------------

_CRC_POLY = 0xEDB88320  # CRC-32 (zlib's), bit-reflected: bit 31 holds the coefficient of x^0


def _crc_mul(a: int, b: int) -> int:
    """The product of two polynomials modulo the CRC-32 polynomial, in the reflected form."""
    product = 0
    bit = 1 << 31
    while a:
        if a & bit:
            product ^= b
            a ^= bit
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1
        bit >>= 1
    return product


# x^(2^k) modulo the polynomial, k = 0..66 (enough for any 64-bit length in bits).
_X_POW2 = [1 << 30]
for _ in range(66):
    _X_POW2.append(_crc_mul(_X_POW2[-1], _X_POW2[-1]))


@functools.lru_cache(maxsize=256)
def _x_pow_bytes(n: int) -> int:
    """x^(8n) modulo the polynomial: what appending ``n`` bytes multiplies a crc's register by."""
    power, k = 1 << 31, 3
    while n:
        if n & 1:
            power = _crc_mul(_X_POW2[k], power)
        n >>= 1
        k += 1
    return power


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """``zlib.crc32(a + b)`` from ``crc1 = zlib.crc32(a)``, ``crc2 = zlib.crc32(b)`` and ``len(b)``.

    The crc is affine in the message, so the crc of ``a`` shifted by ``len(b)`` bytes of
    zeros (a multiplication by x^(8·len(b)) modulo the polynomial) combines with the crc of
    ``b`` by exclusive or. A few microseconds for lengths seen before (they are cached)."""
    return _crc_mul(_x_pow_bytes(len2), crc1) ^ crc2


# Payloads are checksummed in stripes of this many bytes (the last one shorter).
CRC_STRIPE = 4 * 1024 * 1024
# Pieces smaller than this are checksummed in the calling thread (a hop costs more).
_POOL_MIN = 256 * 1024
# Bytes whose crc may be pending at once; past it, adding more waits for the oldest.
_MAX_PENDING = 64 * 1024 * 1024
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _crc_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                workers = max(2, min(4, os.cpu_count() or 1))
                _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="actmem-crc")
    return _pool


def _forget_pool() -> None:
    # A forked child has none of the parent's threads (and maybe a lock one of them held).
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _find_libdeflate() -> Callable[[bytes | memoryview, int], int] | None:
    """libdeflate's crc32 (the same CRC-32 as zlib's, with carry-less multiplication: several
    times faster), where the system has the library; None elsewhere."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("deflate") or "libdeflate.so.0")
        fn = lib.libdeflate_crc32
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_uint32
    fn.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]

    def crc32(data: bytes | memoryview, crc: int = 0) -> int:
        array = np.frombuffer(data, dtype=np.uint8)  # the address of read-only buffers too, no copy
        return int(fn(crc, array.ctypes.data, array.nbytes)) if array.nbytes else crc

    sample = bytes(range(256)) * 9
    if crc32(sample, 12345) != zlib.crc32(sample, 12345) or crc32(memoryview(sample)[3:]) != zlib.crc32(sample[3:]):
        return None
    return crc32


_fast_crc32: Callable[[bytes | memoryview, int], int] | None = None
_fast_crc32_probed = False


def crc32(data: bytes | memoryview, crc: int = 0) -> int:
    """``zlib.crc32``, computed by libdeflate when the system has it (ctypes releases the GIL
    like zlib does). Large buffers only: a call through ctypes costs a few microseconds."""
    global _fast_crc32, _fast_crc32_probed
    if not _fast_crc32_probed:
        _fast_crc32, _fast_crc32_probed = _find_libdeflate(), True
    if _fast_crc32 is not None and len(data) >= 64 * 1024:
        return _fast_crc32(data, crc)
    return zlib.crc32(data, crc)


def _crc_of(views: tuple[memoryview, ...]) -> int:
    crc = 0
    for view in views:
        crc = crc32(view, crc)
    return crc


class Checksum:
    """A payload's checksum, fed in order. crc32 pieces may be computed on a thread pool
    (:meth:`update_later`) while the caller goes on; :meth:`value` puts them together."""

    def __init__(self, algorithm: str) -> None:
        if algorithm not in ("crc32", "sha256"):
            raise InvalidArgument(f"unknown checksum algorithm {algorithm!r}", reason="BAD_CHECKSUM")
        self.algorithm = algorithm
        self._sha = hashlib.sha256() if algorithm == "sha256" else None
        # crc32: the crcs of consecutive segments (a value, or the future of one) and their lengths,
        # then the run being fed in this thread (its crc from 0, and its length).
        self._segments: deque[tuple[int | Future[int], int]] = deque()
        self._crc = 0
        self._len = 0
        self._pending = 0  # bytes of the segments still computed on the pool

    @classmethod
    def for_value(cls, value: str) -> Checksum:
        algorithm, _, digest = value.partition(":")
        if not digest:
            raise InvalidArgument(
                f"checksum must be 'crc32:<hex>' or 'sha256:<hex>', not {value!r}", reason="BAD_CHECKSUM"
            )
        return cls(algorithm)

    def update(self, data: bytes | memoryview) -> None:
        if self._sha is not None:
            self._sha.update(data)
        else:
            self._crc = crc32(data, self._crc)
            self._len += memoryview(data).nbytes

    def update_later(self, *views: memoryview) -> None:
        """Adds the bytes of ``views``, in order, checksummed on the pool when that pays.

        The views must keep their content until :meth:`value` (they are read meanwhile,
        in another thread)."""
        size = sum(v.nbytes for v in views)
        if self._sha is not None or size < _POOL_MIN:
            for view in views:
                self.update(view)
            return
        self._close_run()
        self._segments.append((_crc_pool().submit(_crc_of, views), size))
        self._pending += size
        while self._pending > _MAX_PENDING:
            self._settle_oldest()

    def _close_run(self) -> None:
        if self._len:
            self._segments.append((self._crc, self._len))
            self._crc = self._len = 0

    def _settle_oldest(self) -> None:
        for i, (part, size) in enumerate(self._segments):
            if isinstance(part, Future):
                self._segments[i] = (part.result(), size)
                self._pending -= size
                return

    def value(self) -> str:
        if self._sha is not None:
            return "sha256:" + self._sha.hexdigest()
        self._close_run()
        crc = None
        for part, size in self._segments:
            value = part.result() if isinstance(part, Future) else part
            crc = value if crc is None else crc32_combine(crc, value, size)
        return f"crc32:{crc or 0:08x}"


def iter_views(kv: KV, chunk_bytes: int) -> Iterator[memoryview]:
    """The safetensors payload of ``kv`` in read-only views of at most ``chunk_bytes``.

    The views are slices of the tensors' own memory, not copies (a device tensor is
    copied to the host one at a time), so they show the cache as it is while they
    are used; whoever keeps one must copy it."""
    yield memoryview(encode_header(specs_of(kv)))
    for k, v in kv:
        for t in (k, v):
            view = _byte_view(t.detach().to("cpu").contiguous()).toreadonly()
            for start in range(0, len(view), chunk_bytes):
                yield view[start : start + chunk_bytes]


def iter_payload(kv: KV, chunk_bytes: int) -> Iterator[bytes]:
    """The safetensors payload of ``kv`` in chunks of at most ``chunk_bytes``, as bytes.

    Only one layer's tensor is ever copied to the host at a time."""
    for view in iter_views(kv, chunk_bytes):
        yield bytes(view)


def checksum_of(kv: KV, algorithm: str) -> str:
    """The checksum of ``kv``'s payload; a crc32 is computed in stripes on the thread pool."""
    c = Checksum(algorithm)
    for view in iter_views(kv, CRC_STRIPE):
        c.update_later(view)
    return c.value()


class PayloadDecoder:
    """Rebuilds a cache from payload bytes fed in arbitrary chunks.

    ``expected`` is the layout the caller announced (and the model allows);
    a payload whose own header disagrees, that is longer or shorter than
    announced, or whose checksum differs is refused, and nothing of it is kept.

    The bytes go straight into the tensors; the checksum runs over the tensors'
    memory in stripes of :data:`CRC_STRIPE`, on the thread pool, while the next
    bytes arrive (the chunks fed need not outlive :meth:`feed`).
    """

    def __init__(self, expected: list[TensorSpec], payload_bytes: int, checksum: str, source: str = "stream") -> None:
        self._expected = expected
        self._source = source
        self._total = payload_bytes
        self._canonical_header = encode_header(expected)
        self._want_header = len(self._canonical_header)
        # Whether the payload's header is byte for byte the one this codec writes.
        self._canonical = False
        if payload_bytes != self._want_header + sum(s.nbytes for s in expected):
            raise CorruptPayload(
                f"{source}: announced payload of {payload_bytes} bytes does not match its tensors",
                metadata={"source": source},
            )
        self._checksum_expected = checksum
        self._checksum = Checksum.for_value(checksum)
        self._head: bytearray | bytes = bytearray()
        self._received = 0
        self._tensors: list[torch.Tensor] = []
        self._views: list[memoryview] = []
        self._starts: list[int] = []  # payload offset of each tensor's first byte
        self._index = 0  # tensor being filled
        self._filled = 0  # bytes of it filled
        self._summed = 0  # payload bytes handed to the checksum

    def _fail(self, why: str) -> CorruptPayload:
        return CorruptPayload(f"{self._source}: {why}", metadata={"source": self._source})

    def _parse_header(self) -> None:
        self._head = bytes(self._head)  # complete: checksummed later, from this
        self._canonical = self._head == self._canonical_header
        (n,) = struct.unpack("<Q", self._head[:8])
        if n > MAX_HEADER_BYTES or 8 + n != self._want_header:
            raise self._fail(f"safetensors header of {n} bytes does not describe the announced tensors")
        try:
            header = json.loads(self._head[8 : 8 + n].decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._fail(f"unreadable safetensors header ({exc})") from None
        if not isinstance(header, dict):
            raise self._fail("unreadable safetensors header (not an object)")
        header.pop("__metadata__", None)
        offset = 0
        if len(header) != len(self._expected):
            raise self._fail(f"{len(header)} tensors where {len(self._expected)} were announced")
        for spec in self._expected:
            entry = header.get(spec.name)
            if not isinstance(entry, dict):
                raise self._fail(f"tensor {spec.name} is missing")
            if entry.get("dtype") != spec.dtype or tuple(entry.get("shape", ())) != spec.shape:
                raise self._fail(
                    f"tensor {spec.name} is {entry.get('dtype')} {entry.get('shape')}, expected {spec.dtype} {list(spec.shape)}"
                )
            if entry.get("data_offsets") != [offset, offset + spec.nbytes]:
                raise self._fail(f"tensor {spec.name} has unexpected data offsets")
            self._starts.append(self._want_header + offset)
            offset += spec.nbytes
        for spec in self._expected:
            t = empty_tensor(spec)
            self._tensors.append(t)
            self._views.append(_byte_view(t))

    def _regions(self, start: int, end: int) -> list[memoryview]:
        """Where payload bytes ``[start, end)`` are kept (all received, the header parsed)."""
        out = []
        if start < self._want_header:
            out.append(memoryview(self._head)[start : min(end, self._want_header)])
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        while i < len(self._views) and self._starts[i] < end:
            lo = max(start - self._starts[i], 0)
            hi = min(end - self._starts[i], len(self._views[i]))
            if hi > lo:
                out.append(self._views[i][lo:hi])
            i += 1
        return out

    def _sum_received(self, final: bool = False) -> None:
        """Hands the received stripes (and, when ``final``, the rest) to the checksum."""
        if isinstance(self._head, bytearray):  # the header is not parsed yet
            return
        while self._received - self._summed >= CRC_STRIPE or (final and self._summed < self._received):
            end = min(self._summed + CRC_STRIPE, self._received)
            self._checksum.update_later(*self._regions(self._summed, end))
            self._summed = end

    def feed(self, chunk: bytes | memoryview) -> None:
        data = memoryview(chunk)
        if data.ndim != 1 or data.itemsize != 1:
            data = data.cast("B")
        if self._received + len(data) > self._total:
            raise self._fail(f"more than the announced {self._total} bytes")
        if len(self._head) < self._want_header:
            take = min(self._want_header - len(self._head), len(data))
            self._head += data[:take]  # type: ignore[operator]
            self._received += take
            data = data[take:]
            if len(self._head) < 8:
                return
            if len(self._head) == self._want_header:
                self._parse_header()
            else:
                (n,) = struct.unpack("<Q", bytes(self._head[:8]))
                if 8 + n != self._want_header:
                    raise self._fail(f"safetensors header of {n} bytes does not describe the announced tensors")
        while len(data):
            view = self._views[self._index]
            take = min(len(view) - self._filled, len(data))
            # numpy copies without holding the GIL (a memoryview assignment holds it): the
            # other end of an in-process stream, and other calls, run during the copy.
            np.copyto(_array(view)[self._filled : self._filled + take], np.frombuffer(data[:take], dtype=np.uint8))
            self._filled += take
            self._received += take
            data = data[take:]
            if self._filled == len(view):
                self._index += 1
                self._filled = 0
        self._sum_received()

    def fill(self, readinto: Callable[[memoryview], int | None], chunk_bytes: int = CRC_STRIPE) -> None:
        """Reads the rest of the payload from ``readinto`` (a file's) straight into the tensors.

        No buffer sits between the source and the tensors; what has been read is checksummed
        on the pool while the next part is read. Stops at the end of the source; a short one
        is reported by :meth:`finish`, a longer one here."""
        if len(self._head) < self._want_header:
            head = bytearray(self._want_header - len(self._head))
            got = _read_fully(readinto, memoryview(head))
            self.feed(memoryview(head)[:got])
            if got < len(head):
                return
        while self._index < len(self._views):
            view = self._views[self._index]
            n = readinto(view[self._filled : self._filled + chunk_bytes]) or 0
            if n == 0:
                return
            self._received += n
            self._filled += n
            if self._filled == len(view):
                self._index += 1
                self._filled = 0
            self._sum_received()
        if readinto(memoryview(bytearray(1))):
            raise self._fail(f"more than the announced {self._total} bytes")

    @property
    def canonical_checksum(self) -> str:
        """The verified checksum, if it is also that of this codec's own encoding of the cache
        (the payload's header was byte for byte the canonical one), so that it can be kept
        instead of recomputed; "" otherwise. Only meaningful after :meth:`finish`."""
        return self._checksum_expected if self._canonical else ""

    def finish(self) -> KV:
        if self._received != self._total:
            raise self._fail(f"truncated: {self._received} of {self._total} bytes")
        self._sum_received(final=True)
        got = self._checksum.value()
        if got != self._checksum_expected:
            raise self._fail(f"checksum mismatch ({got} != {self._checksum_expected})")
        ts = self._tensors
        return [(ts[i], ts[i + 1]) for i in range(0, len(ts), 2)]


def _read_fully(readinto: Callable[[memoryview], int | None], into: memoryview) -> int:
    got = 0
    while got < len(into):
        n = readinto(into[got:]) or 0
        if n == 0:
            break
        got += n
    return got


# Errors of a disk (or a quota on it) that has no room left for a file.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
# What posix_fallocate answers where a filesystem cannot reserve blocks ahead: the file is
# then simply written (ENOSYS/EOPNOTSUPP: not supported; EINVAL: e.g. some FUSE filesystems).
_NO_FALLOCATE = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS})


def _preallocate(fd: int, size: int) -> None:
    """Reserves ``size`` bytes of disk for the file ahead of writing them, where the filesystem can.

    A file that cannot fit then fails here, before anything is written, instead of after
    filling the disk; and writing into reserved extents is faster (ext4 takes the pages
    without allocating blocks write by write)."""
    if size <= 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in _NO_FALLOCATE:
            raise


def no_space_error(exc: OSError, path: Path, size: int) -> ResourceExhausted | None:
    """The error to report for ``exc`` if it says that the disk has no room for ``path``."""
    if exc.errno not in _NO_SPACE:
        return None
    return ResourceExhausted(
        f"no space left on the disk for {path.name} ({size} bytes): {exc.strerror}",
        reason="DISK_FULL",
        metadata={"file": path.name, "size_bytes": str(size)},
    )


def write_file(path: Path, kv: KV, chunk_bytes: int = 8 * 1024 * 1024) -> None:
    """Writes atomically: a crash leaves the old file or none, never half of one.

    The file's space is reserved first (:func:`_preallocate`); a disk without room for it
    fails with RESOURCE_EXHAUSTED (reason DISK_FULL), and whatever failure leaves no
    partial file behind."""
    tmp = path.with_name(path.name + ".tmp")
    size = payload_size(specs_of(kv))
    try:
        with open(tmp, "wb") as f:
            _preallocate(f.fileno(), size)
            # Written from the tensors' memory: the only copy is the kernel's, into the page cache.
            for view in iter_views(kv, chunk_bytes):
                f.write(view)
        tmp.replace(path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and (full := no_space_error(exc, path, size)) is not None:
            raise full from None
        raise


def read_file(path: Path, expected: list[TensorSpec], checksum: str, device: str = "cpu") -> KV:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CorruptPayload(f"{path.name}: cannot be read ({exc.strerror})", metadata={"source": path.name}) from None
    dec = PayloadDecoder(expected, payload_size(expected), checksum, source=path.name)
    if size != payload_size(expected):
        raise CorruptPayload(
            f"{path.name}: {size} bytes on disk, {payload_size(expected)} expected (truncated or not this cache)",
            metadata={"source": path.name},
        )
    with open(path, "rb", buffering=0) as f:
        dec.fill(f.readinto)
    kv = dec.finish()
    if device != "cpu":
        kv = [(k.to(device), v.to(device)) for k, v in kv]
    return kv
