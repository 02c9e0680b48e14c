"""Writing caches to a disk without room: dumps (and evictions) fail with RESOURCE_EXHAUSTED,
reason DISK_FULL, and leave no partial file; filesystems that cannot preallocate still work.

A full disk is simulated deterministically: os.posix_fallocate (or a write) raises the errno
a real one would."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest
import torch

from services.actmem import codec
from shared.errors import Code, ResourceExhausted


def _kv(tokens: int = 300) -> list:  # type: ignore[type-arg]
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(1, 2, tokens, 8, generator=g), torch.randn(1, 2, tokens, 8, generator=g)) for _ in range(2)]


def _fallocate_raising(err: int, calls: list[tuple[int, int]] | None = None):  # type: ignore[no-untyped-def]
    def fallocate(fd: int, offset: int, length: int) -> None:
        if calls is not None:
            calls.append((offset, length))
        raise OSError(err, os.strerror(err))

    return fallocate


def test_the_whole_file_is_reserved_before_it_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kv = _kv()
    calls: list[tuple[int, int]] = []
    real = os.posix_fallocate

    def fallocate(fd: int, offset: int, length: int) -> None:
        assert os.fstat(fd).st_size == 0  # nothing written yet
        calls.append((offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(codec.os, "posix_fallocate", fallocate)
    path = tmp_path / "c.safetensors"
    codec.write_file(path, kv, chunk_bytes=1000)
    size = codec.payload_size(codec.specs_of(kv))
    assert calls == [(0, size)] and path.stat().st_size == size
    assert path.read_bytes() == b"".join(codec.iter_payload(kv, 1 << 20))


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT])
def test_no_room_fails_before_writing_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    monkeypatch.setattr(codec.os, "posix_fallocate", _fallocate_raising(err))
    path = tmp_path / "c.safetensors"
    with pytest.raises(ResourceExhausted) as exc:
        codec.write_file(path, _kv())
    assert exc.value.reason == "DISK_FULL" and exc.value.metadata["file"] == "c.safetensors"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("err", [errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS])
def test_filesystems_that_cannot_preallocate_are_written_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    monkeypatch.setattr(codec.os, "posix_fallocate", _fallocate_raising(err))
    kv = _kv()
    path = tmp_path / "c.safetensors"
    codec.write_file(path, kv)
    assert path.read_bytes() == b"".join(codec.iter_payload(kv, 1 << 20))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]


class _FillingFile(io.FileIO):
    """A file on a disk that fills up after ``room`` bytes (where nothing was preallocated)."""

    room = 5000

    def write(self, data) -> int:  # type: ignore[no-untyped-def, override]
        if self.tell() + memoryview(data).nbytes > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_a_disk_filling_up_midway_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec.os, "posix_fallocate", _fallocate_raising(errno.EOPNOTSUPP))
    monkeypatch.setattr(codec, "open", lambda p, mode: _FillingFile(p, mode), raising=False)
    old = tmp_path / "c.safetensors"
    old.write_bytes(b"previous dump")
    with pytest.raises(ResourceExhausted) as exc:
        codec.write_file(old, _kv(), chunk_bytes=1000)
    assert exc.value.reason == "DISK_FULL"
    # The previous file is kept whole, the new one's temporary is gone.
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"] and old.read_bytes() == b"previous dump"


def test_other_write_errors_pass_through_and_leave_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec.os, "posix_fallocate", _fallocate_raising(errno.EIO))
    with pytest.raises(OSError) as exc:
        codec.write_file(tmp_path / "c.safetensors", _kv())
    assert exc.value.errno == errno.EIO
    assert list(tmp_path.iterdir()) == []


def test_a_dump_to_a_full_disk_is_resource_exhausted_and_writes_nothing(service, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    c = service.client
    c.extract("cube", "alice likes tea. " * 10)
    monkeypatch.setattr(codec.os, "posix_fallocate", _fallocate_raising(errno.ENOSPC))
    with pytest.raises(ResourceExhausted) as exc:
        c.dump("cube", "full")
    assert exc.value.code == Code.RESOURCE_EXHAUSTED and exc.value.reason == "DISK_FULL"
    assert "no space left" in exc.value.message
    assert list((service.memory.dump_root / "full").iterdir()) == []
    # With room again, the same dump succeeds.
    monkeypatch.undo()
    assert c.dump("cube", "full") == 1


def test_a_full_disk_refuses_an_eviction_and_keeps_the_cache(make_service, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    one = make_service().client.extract("cube", "alice likes tea. " * 10).size_bytes
    c = make_service(max_cache_bytes=int(one * 1.5)).client
    a = c.extract("cube", "alice likes tea. " * 10)
    monkeypatch.setattr(codec.os, "posix_fallocate", _fallocate_raising(errno.ENOSPC))
    with pytest.raises(ResourceExhausted) as exc:
        c.extract("cube", "bobby likes tea. " * 10)  # would evict a to disk
    assert exc.value.reason == "DISK_FULL"
    assert [(i.cache_id, i.resident) for i in c.list("cube")] == [(a.cache_id, True)]
    _, kv = c.get("cube", a.cache_id)
    assert kv[0][0].shape[2] == a.num_tokens
