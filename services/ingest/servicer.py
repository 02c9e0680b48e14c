"""IngestService servicer: convert, run the pipeline, write to textmem, convert back."""

from __future__ import annotations

import hashlib
import uuid

from memos.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from memos.textmem.v1 import textmem_pb2
from services.ingest import convert
from services.ingest.pipeline import Ingestor
from services.ingest.textmem_client import TextMemWriter
from shared.errors import InvalidArgument, ResourceExhausted


def _require(value: str, field: str) -> None:
    if not value or not value.strip():
        raise InvalidArgument(f"{field} is required", reason=f"MISSING_{field.upper()}", metadata={"field": field})


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, ingestor: Ingestor, textmem: TextMemWriter) -> None:
        self._ing = ingestor
        self._textmem = textmem

    async def _extract(self, request):  # type: ignore[no-untyped-def]
        _require(request.user_id, "user_id")
        mode = convert.mode_from_proto(request.mode)
        messages = convert.messages_from_proto(request.messages)
        if len(messages) > self._ing.settings.max_messages_per_add:
            raise InvalidArgument(
                f"{len(messages)} messages; the limit is {self._ing.settings.max_messages_per_add}",
                reason="TOO_MANY_MESSAGES",
            )
        return await self._ing.extract(
            messages,
            mode=mode,
            user_id=request.user_id,
            tags=list(request.custom_tags),
            info=convert.info_from_proto(request.info),
        )

    async def ParseMessages(self, request, context):  # type: ignore[no-untyped-def]
        result = await self._extract(request)
        return ingest_pb2.ParseMessagesResponse(
            candidates=[
                convert.item_to_candidate(i, request.user_id, request.session_id, request.cube_id) for i in result.items
            ],
            part_errors=[convert.part_error_to_proto(e) for e in result.part_errors],
            effective_mode=convert.MODE_VALUES[result.effective_mode],
            notices=result.notices,
            fine_available=self._ing.llm is not None,
        )

    async def IngestMessages(self, request, context):  # type: ignore[no-untyped-def]
        _require(request.cube_id, "cube_id")
        result = await self._extract(request)
        memories = []
        if result.items:
            candidates = [convert.item_to_candidate(i, request.user_id, request.session_id) for i in result.items]
            resp = await self._textmem.write(
                textmem_pb2.WriteMemoriesRequest(
                    request_id=request.request_id or uuid.uuid4().hex,
                    cube_id=request.cube_id,
                    user_id=request.user_id,
                    session_id=request.session_id,
                    candidates=[textmem_pb2.MemoryCandidate(memory=c.memory, metadata=c.metadata) for c in candidates],
                ),
                context.time_remaining(),
            )
            memories = list(resp.memories)
        return ingest_pb2.IngestMessagesResponse(
            memories=memories,
            part_errors=[convert.part_error_to_proto(e) for e in result.part_errors],
            effective_mode=convert.MODE_VALUES[result.effective_mode],
            notices=result.notices,
        )

    async def UploadFile(self, request_iterator, context):  # type: ignore[no-untyped-def]
        limit = self._ing.settings.fetch_max_bytes
        header = None
        chunks: list[bytes] = []
        size = 0
        async for msg in request_iterator:
            kind = msg.WhichOneof("payload")
            if header is None:
                if kind != "header":
                    raise InvalidArgument(
                        "the first message of an upload must be its header", reason="UPLOAD_NO_HEADER"
                    )
                header = msg.header
                _require(header.user_id, "user_id")
                if header.size_bytes > limit:
                    raise ResourceExhausted(
                        f"the file is {header.size_bytes} bytes; the limit is {limit}",
                        reason="FILE_TOO_LARGE",
                        metadata={"limit": str(limit)},
                    )
                continue
            if kind != "chunk":
                raise InvalidArgument("only the first message of an upload is a header", reason="UPLOAD_TWO_HEADERS")
            size += len(msg.chunk)
            if size > limit:
                raise ResourceExhausted(
                    f"the file is larger than {limit} bytes", reason="FILE_TOO_LARGE", metadata={"limit": str(limit)}
                )
            chunks.append(msg.chunk)
        if header is None:
            raise InvalidArgument("the upload was empty", reason="UPLOAD_NO_HEADER")
        if header.size_bytes and header.size_bytes != size:
            raise InvalidArgument(
                f"the header said {header.size_bytes} bytes, {size} arrived", reason="UPLOAD_SIZE_MISMATCH"
            )
        data = b"".join(chunks)
        up = self._ing.uploads.put(header.user_id, header.filename, header.media_type, data)
        return ingest_pb2.UploadFileResponse(
            file_id=up.file_id, size_bytes=size, sha256=hashlib.sha256(data).hexdigest()
        )
