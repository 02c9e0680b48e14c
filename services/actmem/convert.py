"""Between actmem's protobuf messages and its domain types."""

from __future__ import annotations

from memos.actmem.v1 import actmem_pb2
from memos.common.v1 import message_pb2
from services.actmem import codec
from services.actmem.models import CacheMeta, Fingerprint
from shared.errors import InvalidArgument
from shared.times import to_timestamp

_ROLES = {
    message_pb2.ROLE_SYSTEM: "system",
    message_pb2.ROLE_USER: "user",
    message_pb2.ROLE_ASSISTANT: "assistant",
    message_pb2.ROLE_TOOL: "tool",
    message_pb2.ROLE_DEVELOPER: "developer",
}


def fingerprint_to_proto(fp: Fingerprint) -> actmem_pb2.ModelFingerprint:
    return actmem_pb2.ModelFingerprint(
        name=fp.name,
        num_layers=fp.num_layers,
        num_kv_heads=fp.num_kv_heads,
        head_dim=fp.head_dim,
        dtype=fp.dtype,
        rope_json=fp.rope_json,
        digest=fp.digest,
        max_context=fp.max_context,
    )


def fingerprint_from_proto(p: actmem_pb2.ModelFingerprint) -> Fingerprint:
    return Fingerprint(
        name=p.name,
        num_layers=p.num_layers,
        num_kv_heads=p.num_kv_heads,
        head_dim=p.head_dim,
        dtype=p.dtype,
        rope_json=p.rope_json,
        digest=p.digest,
        max_context=p.max_context,
    )


def meta_to_proto(meta: CacheMeta, *, with_payload: bool = False) -> actmem_pb2.CacheInfo:
    info = actmem_pb2.CacheInfo(
        cache_id=meta.cache_id,
        cube_id=meta.cube_id,
        source_text=meta.source_text,
        num_tokens=meta.num_tokens,
        num_layers=meta.num_layers,
        size_bytes=meta.size_bytes,
        model=meta.fingerprint.name,
        dtype=meta.fingerprint.dtype,
        created_at=to_timestamp(meta.created_at),
        merged_from=meta.merged_from,
        metadata=meta.metadata,
        fingerprint=fingerprint_to_proto(meta.fingerprint),
        checksum=meta.checksum,
        last_used_at=to_timestamp(meta.last_used_at),
        resident=meta.resident,
        user_id=meta.user_id,
    )
    if with_payload:
        specs = codec.expected_specs(meta.fingerprint, meta.num_tokens)
        info.tensors.extend(actmem_pb2.TensorSpec(name=s.name, dtype=s.dtype, shape=list(s.shape)) for s in specs)
        info.payload_bytes = codec.payload_size(specs)
    return info


def header_from_proto(info: actmem_pb2.CacheInfo) -> tuple[CacheMeta, list[codec.TensorSpec], int, str]:
    """The cache an AddCache header announces: its description, tensors, payload size and checksum."""
    if not info.HasField("fingerprint"):
        raise InvalidArgument("the header must carry the model fingerprint", reason="BAD_HEADER")
    specs = []
    for t in info.tensors:
        if t.dtype not in codec.ST_TO_TORCH:
            raise InvalidArgument(f"tensor {t.name}: unsupported dtype {t.dtype!r}", reason="BAD_TENSORS")
        specs.append(codec.TensorSpec(t.name, t.dtype, tuple(int(d) for d in t.shape)))
    meta = CacheMeta(
        cache_id=info.cache_id,
        cube_id=info.cube_id,
        fingerprint=fingerprint_from_proto(info.fingerprint),
        source_text=info.source_text,
        num_tokens=info.num_tokens,
        size_bytes=info.size_bytes,
        merged_from=list(info.merged_from),
        metadata=dict(info.metadata),
        user_id=info.user_id,
    )
    if info.HasField("created_at"):
        meta.created_at = info.created_at.ToNanoseconds() / 1e9
    return meta, specs, info.payload_bytes, info.checksum


def messages_from_proto(messages) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    out = []
    for i, m in enumerate(messages):
        role = _ROLES.get(m.role)
        if role is None:
            raise InvalidArgument(f"messages[{i}]: role is required", reason="BAD_MESSAGES")
        texts = []
        for part in m.content:
            if part.WhichOneof("part") != "text":
                raise InvalidArgument(
                    f"messages[{i}]: only text parts can be rendered into a cache", reason="UNSUPPORTED_CONTENT"
                )
            texts.append(part.text.text)
        out.append({"role": role, "content": "".join(texts)})
    return out


def prompt_from_proto(request) -> str | list[dict[str, str]]:  # type: ignore[no-untyped-def]
    which = request.WhichOneof("prompt")
    if which == "text":
        return request.text
    if which == "messages":
        return messages_from_proto(request.messages.messages)
    raise InvalidArgument("messages or text is required", reason="EMPTY_PROMPT")
