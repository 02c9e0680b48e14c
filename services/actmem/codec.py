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
straight into the destination tensors, and checksums run over each chunk
while it is still in the CPU cache.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from services.actmem.models import KV, Fingerprint
from shared.errors import FailedPrecondition, InvalidArgument

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


class Checksum:
    def __init__(self, algorithm: str) -> None:
        if algorithm not in ("crc32", "sha256"):
            raise InvalidArgument(f"unknown checksum algorithm {algorithm!r}", reason="BAD_CHECKSUM")
        self.algorithm = algorithm
        self._crc = 0
        self._sha = hashlib.sha256() if algorithm == "sha256" else None

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
            self._crc = zlib.crc32(data, self._crc)

    def value(self) -> str:
        if self._sha is not None:
            return "sha256:" + self._sha.hexdigest()
        return f"crc32:{self._crc:08x}"


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
    c = Checksum(algorithm)
    c.update(encode_header(specs_of(kv)))
    for k, v in kv:
        for t in (k, v):
            c.update(_byte_view(t.detach().to("cpu").contiguous()))
    return c.value()


class PayloadDecoder:
    """Rebuilds a cache from payload bytes fed in arbitrary chunks.

    ``expected`` is the layout the caller announced (and the model allows);
    a payload whose own header disagrees, that is longer or shorter than
    announced, or whose checksum differs is refused, and nothing of it is kept.
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
        self._head = bytearray()
        self._received = 0
        self._tensors: list[torch.Tensor] = []
        self._views: list[memoryview] = []
        self._index = 0  # tensor being filled
        self._filled = 0  # bytes of it filled

    def _fail(self, why: str) -> CorruptPayload:
        return CorruptPayload(f"{self._source}: {why}", metadata={"source": self._source})

    def _parse_header(self) -> None:
        self._canonical = self._head == self._canonical_header
        (n,) = struct.unpack("<Q", bytes(self._head[:8]))
        if n > MAX_HEADER_BYTES or 8 + n != self._want_header:
            raise self._fail(f"safetensors header of {n} bytes does not describe the announced tensors")
        try:
            header = json.loads(bytes(self._head[8 : 8 + n]).decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._fail(f"unreadable safetensors header ({exc})") from None
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
            offset += spec.nbytes
            t = torch.empty(spec.shape, dtype=ST_TO_TORCH[spec.dtype])
            self._tensors.append(t)
            self._views.append(_byte_view(t))

    def feed(self, chunk: bytes | memoryview) -> None:
        data = memoryview(chunk)
        if self._received + len(data) > self._total:
            raise self._fail(f"more than the announced {self._total} bytes")
        self._received += len(data)
        self._checksum.update(data)
        if len(self._head) < self._want_header:
            take = min(self._want_header - len(self._head), len(data))
            self._head += data[:take]
            data = data[take:]
            if len(self._head) < 8:
                return
            if len(self._head) == self._want_header:
                self._parse_header()
            elif len(self._head) >= 8:
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
            data = data[take:]
            if self._filled == len(view):
                self._index += 1
                self._filled = 0

    def fill(self, readinto: Callable[[memoryview], int | None], chunk_bytes: int = 1024 * 1024) -> None:
        """Reads the rest of the payload from ``readinto`` (a file's) straight into the tensors.

        No buffer sits between the source and the tensors: each chunk is read in place and
        checksummed while it is still in the CPU cache. Stops at the end of the source; a
        short one is reported by :meth:`finish`, a longer one here."""
        if len(self._head) < self._want_header:
            head = bytearray(self._want_header - len(self._head))
            got = _read_fully(readinto, memoryview(head))
            self.feed(memoryview(head)[:got])
            if got < len(head):
                return
        while self._index < len(self._views):
            view = self._views[self._index]
            part = view[self._filled : self._filled + chunk_bytes]
            n = readinto(part) or 0
            if n == 0:
                return
            self._checksum.update(part[:n])
            self._received += n
            self._filled += n
            if self._filled == len(view):
                self._index += 1
                self._filled = 0
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


def write_file(path: Path, kv: KV, chunk_bytes: int = 8 * 1024 * 1024) -> None:
    """Writes atomically: a crash leaves the old file or none, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        # Written from the tensors' memory: the only copy is the kernel's, into the page cache.
        for view in iter_views(kv, chunk_bytes):
            f.write(view)
    tmp.replace(path)


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
