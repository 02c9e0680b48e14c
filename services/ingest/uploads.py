"""Files uploaded with UploadFile, found again by the file_id a file part names."""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from shared.errors import NotFound, PermissionDenied

_ID_PREFIX = "upload-"


@dataclass
class Upload:
    file_id: str
    user_id: str
    filename: str
    media_type: str
    data: bytes


class UploadStore:
    """In memory (bounded, oldest dropped first) or, with a directory, on disk."""

    def __init__(self, directory: str = "", max_files: int = 256) -> None:
        self._dir = Path(directory) if directory else None
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)
        self._max = max_files
        self._items: OrderedDict[str, Upload] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def is_upload_id(file_id: str) -> bool:
        rest = file_id[len(_ID_PREFIX) :]
        return file_id.startswith(_ID_PREFIX) and len(rest) == 32 and all(c in "0123456789abcdef" for c in rest)

    def put(self, user_id: str, filename: str, media_type: str, data: bytes) -> Upload:
        up = Upload(f"{_ID_PREFIX}{uuid.uuid4().hex}", user_id, filename, media_type, data)
        if self._dir is not None:
            (self._dir / up.file_id).write_bytes(data)
            meta = {"user_id": user_id, "filename": filename, "media_type": media_type}
            (self._dir / f"{up.file_id}.json").write_text(json.dumps(meta), encoding="utf-8")
            return up
        with self._lock:
            self._items[up.file_id] = up
            while len(self._items) > self._max:
                self._items.popitem(last=False)
        return up

    def get(self, file_id: str, user_id: str) -> Upload:
        up: Upload | None = None
        if self.is_upload_id(file_id):
            if self._dir is not None:
                path = self._dir / file_id
                if path.exists():
                    meta = json.loads((self._dir / f"{file_id}.json").read_text(encoding="utf-8"))
                    up = Upload(file_id, meta["user_id"], meta["filename"], meta["media_type"], path.read_bytes())
            else:
                with self._lock:
                    up = self._items.get(file_id)
        if up is None:
            raise NotFound(
                f"no uploaded file {file_id!r} (and the part has no file_data)",
                reason="FILE_NOT_FOUND",
                metadata={"file_id": file_id},
            )
        if up.user_id != user_id:
            raise PermissionDenied(f"file {file_id!r} was uploaded by another user", reason="FILE_NOT_YOURS")
        return up
