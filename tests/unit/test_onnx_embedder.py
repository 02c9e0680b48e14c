"""OnnxEmbedder and the local-runtime choice (services/textmem/embedders.py).

The bundled MiniLM is exported once for the module (the real torch.onnx export, ~10 s); the
other cases reuse that file by copying it where the case needs it. The torch reference is the
session's LocalEmbedder (tests/conftest.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from services.textmem import embedders
from services.textmem.embedders import LocalEmbedder, OnnxEmbedder, build_embedder, onnx_cache_key
from services.textmem.settings import TextMemSettings

MODEL_DIR = Path(embedders._bundled_model_path())

# 120 + 130 single-token words fill the 254 positions between [CLS] and [SEP] (max_seq_length
# 256) but for four; what follows is cut off. A runtime truncating at tokenizer.json's 128, or not
# at all (512 positions), embeds a different text and disagrees with torch.
_COOKING = "onion garlic butter flour oven bake simmer salt pepper sauce " * 12
_FINANCE = "bond stock market price bank loan interest rate budget tax trade fund cash " * 10
_SPACE = "planet orbit rocket galaxy star comet moon telescope astronaut nebula " * 30
LONG = _COOKING + _FINANCE + _SPACE

TEXTS = [
    "What did Caroline say about the adoption agency last spring?",
    "",
    "   ",
    "?!",
    "héllo wörld, naïve café; Grüße aus Köln",
    "日本語のテキストと中文文本 😀🚀 ☃",
    "Melanie painted a sunrise over the lake in 2022 and sold it at the fair.",
    LONG,
    "ok",
    "The quarterly budget meeting moved to Thursday because the finance team was travelling. " * 3,
]


class ExportCounter:
    """Wraps export_onnx (the real one unless ``fake`` is given) and counts the calls."""

    def __init__(self, fake=None) -> None:  # type: ignore[no-untyped-def]
        self.calls: list[Path] = []
        self._real = embedders.export_onnx
        self._fake = fake

    def __call__(self, model_dir: Path, dest: Path) -> None:
        self.calls.append(dest)
        (self._fake or self._real)(model_dir, dest)


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def torch_embedder() -> LocalEmbedder:
    """The reference: sentence-transformers on torch (the suite's own embedder fixture is ONNX)."""
    return LocalEmbedder()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[OnnxEmbedder, ExportCounter]:
    """The bundled model on ONNX, exported for real into a fresh cache dir (counted)."""
    counter = ExportCounter()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(embedders, "export_onnx", counter)
        emb = OnnxEmbedder(cache_dir=tmp_path_factory.mktemp("onnx-cache"), batch_size=64, threads=1)
    return emb, counter


@pytest.fixture
def no_export(monkeypatch: pytest.MonkeyPatch) -> ExportCounter:
    def fail(model_dir: Path, dest: Path) -> None:
        raise AssertionError(f"unexpected export of {model_dir} to {dest}")

    counter = ExportCounter(fake=fail)
    monkeypatch.setattr(embedders, "export_onnx", counter)
    return counter


def test_onnx_matches_torch_row_by_row(exported, torch_embedder: LocalEmbedder) -> None:  # type: ignore[no-untyped-def]
    onnx, _ = exported
    a = onnx.embed(TEXTS)
    b = torch_embedder.embed(TEXTS)
    assert a.shape == b.shape == (len(TEXTS), 384)
    assert a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    cos = _cos_rows(a, b)
    assert cos.min() > 0.999, dict(zip(TEXTS, cos.round(5), strict=True))
    assert (onnx.model_name, onnx.dim) == (torch_embedder.model_name, torch_embedder.dim)


def test_long_text_is_truncated_at_max_seq_length(exported) -> None:  # type: ignore[no-untyped-def]
    onnx, _ = exported
    head, tail_changed, head_cut = onnx.embed([LONG, LONG + " entirely different closing words", _COOKING])
    assert float(head @ tail_changed) > 0.99999  # past position 256: not seen
    assert float(head @ head_cut) < 0.95  # the finance words within 256 are seen


def test_batches_keep_input_order(exported, torch_embedder: LocalEmbedder) -> None:  # type: ignore[no-untyped-def]
    onnx, _ = exported
    # Same graph file, batches of 3: eleven texts of mixed lengths sorted into four padded batches.
    small = OnnxEmbedder(cache_dir=onnx.onnx_path.parent, batch_size=3, threads=1)
    assert small.onnx_path == onnx.onnx_path
    texts = [t for t in TEXTS if t.strip()]  # "" and "   " tokenise alike: one of them only
    texts += ["The dog barked.", "Lunch with Sam at noon on Friday, then the dentist at three. " * 4]
    batched = small.embed(texts)
    one_by_one = np.vstack([small.embed([t]) for t in texts])
    sims = batched @ one_by_one.T
    assert list(sims.argmax(axis=1)) == list(range(len(texts)))
    assert np.diag(sims).min() > 0.9999  # padding in a batch changes nothing
    assert _cos_rows(batched, torch_embedder.embed(texts)).min() > 0.999
    assert small.embed([]).shape == (0, 384)


def test_cached_export_is_reused(exported, no_export: ExportCounter) -> None:  # type: ignore[no-untyped-def]
    onnx, first = exported
    assert len(first.calls) == 1 and first.calls[0] == onnx.onnx_path
    assert onnx.onnx_path.name == f"all-MiniLM-L6-v2-{onnx_cache_key(MODEL_DIR)}.onnx"
    before = onnx.onnx_path.stat().st_mtime_ns
    again = OnnxEmbedder(cache_dir=onnx.onnx_path.parent)
    assert again.onnx_path == onnx.onnx_path
    assert no_export.calls == []
    assert onnx.onnx_path.stat().st_mtime_ns == before
    # Atomic write: the temporary file was renamed, nothing else left in the cache dir.
    assert sorted(p.name for p in onnx.onnx_path.parent.iterdir()) == [onnx.onnx_path.name]
    np.testing.assert_allclose(again.embed(TEXTS[:3]), onnx.embed(TEXTS[:3]), atol=1e-6)


def test_cache_key_follows_weights_and_config(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    clone.mkdir()
    for f in ("model.safetensors", "config.json"):
        os.symlink(MODEL_DIR / f, clone / f)
    assert onnx_cache_key(clone) == onnx_cache_key(MODEL_DIR)
    (clone / "config.json").unlink()
    config = (MODEL_DIR / "config.json").read_text().replace('"layer_norm_eps": 1e-12', '"layer_norm_eps": 1e-6')
    (clone / "config.json").write_text(config)
    assert onnx_cache_key(clone) != onnx_cache_key(MODEL_DIR)


def test_corrupted_cache_file_is_exported_again(exported, tmp_path: Path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    onnx, _ = exported
    cache = tmp_path / "cache"
    cache.mkdir()
    broken = cache / onnx.onnx_path.name
    broken.write_bytes(onnx.onnx_path.read_bytes()[: 1 << 20])  # a torn file: the first MiB

    # The re-export is faked with a copy of the good file (the real export runs in `exported`).
    counter = ExportCounter(fake=lambda model_dir, dest: shutil.copyfile(onnx.onnx_path, dest))
    monkeypatch.setattr(embedders, "export_onnx", counter)
    with caplog.at_level(logging.WARNING, logger=embedders.__name__):
        repaired = OnnxEmbedder(cache_dir=cache)
    assert counter.calls == [broken]
    assert "unusable" in caplog.text
    assert broken.stat().st_size == onnx.onnx_path.stat().st_size
    np.testing.assert_allclose(repaired.embed(TEXTS), onnx.embed(TEXTS), atol=1e-6)


class _Recorder:
    """Stands in for LocalEmbedder in build_embedder: records the call, returns the real one."""

    def __init__(self, real: LocalEmbedder) -> None:
        self.real = real
        self.calls: list[tuple] = []

    def __call__(self, *args):  # type: ignore[no-untyped-def]
        self.calls.append(args)
        return self.real


@pytest.fixture
def torch_factory(monkeypatch: pytest.MonkeyPatch, torch_embedder: LocalEmbedder) -> _Recorder:
    rec = _Recorder(torch_embedder)
    monkeypatch.setattr(embedders, "LocalEmbedder", rec)
    return rec


def test_default_settings_run_onnx_from_the_user_cache(  # type: ignore[no-untyped-def]
    exported, tmp_path: Path, no_export, torch_factory, monkeypatch
) -> None:
    onnx, _ = exported
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MEMOS_EMBEDDING_ONNX_CACHE_DIR", raising=False)
    monkeypatch.delenv("MEMOS_EMBEDDING_QUANTIZE", raising=False)
    settings = TextMemSettings(data_dir=tmp_path)
    assert settings.embedding_runtime == "onnx" and settings.embedding_quantize == "int8"
    cached = tmp_path / "xdg" / "memos" / "onnx" / onnx.onnx_path.name
    cached.parent.mkdir(parents=True)
    shutil.copyfile(onnx.onnx_path, cached)
    emb = build_embedder(settings)
    assert isinstance(emb, OnnxEmbedder)
    # The float export is found in the cache (not exported again); its int8 twin is made beside it.
    assert emb.onnx_path == cached.with_name(cached.stem + "-int8.onnx") and emb.onnx_path.is_file()
    assert torch_factory.calls == [] and no_export.calls == []


def test_a_failed_quantization_runs_the_float_graph_not_torch(  # type: ignore[no-untyped-def]
    exported, tmp_path: Path, no_export, torch_factory, monkeypatch, caplog
) -> None:
    onnx, _ = exported
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copyfile(onnx.onnx_path, cache / onnx.onnx_path.name)

    def read_only(src: Path, dest: Path) -> None:
        raise PermissionError(13, "Read-only file system", str(dest))

    monkeypatch.setattr(embedders, "quantize_onnx_int8", read_only)
    with caplog.at_level(logging.WARNING, logger=embedders.__name__):
        emb = build_embedder(
            TextMemSettings(data_dir=tmp_path, embedding_onnx_cache_dir=cache, embedding_quantize="int8")
        )
    assert isinstance(emb, OnnxEmbedder) and emb.onnx_path == cache / onnx.onnx_path.name
    assert "running the float model" in caplog.text
    assert torch_factory.calls == []
    np.testing.assert_allclose(emb.embed(TEXTS[:2]), onnx.embed(TEXTS[:2]), atol=1e-6)


def test_unusable_cache_and_failed_export_fall_back_to_torch(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch, caplog, torch_factory
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"all-MiniLM-L6-v2-{onnx_cache_key(MODEL_DIR)}.onnx").write_bytes(b"not a model")

    def broken_export(model_dir: Path, dest: Path) -> None:
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(embedders, "export_onnx", broken_export)
    settings = TextMemSettings(data_dir=tmp_path, embedding_onnx_cache_dir=cache, embedding_batch_size=32)
    with caplog.at_level(logging.WARNING, logger=embedders.__name__):
        emb = build_embedder(settings)
    assert emb is torch_factory.real
    assert torch_factory.calls == [("", "cpu", 32, 1)]
    assert "exporter exploded" in caplog.text and "falling back to torch" in caplog.text


def test_missing_onnxruntime_falls_back_to_torch(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch, caplog, no_export, torch_factory
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with caplog.at_level(logging.WARNING, logger=embedders.__name__):
        emb = build_embedder(TextMemSettings(data_dir=tmp_path))
    assert emb is torch_factory.real
    assert len(torch_factory.calls) == 1
    assert "ModuleNotFoundError" in caplog.text and "onnxruntime" in caplog.text
    assert no_export.calls == []


def test_torch_runtime_and_gpu_devices_skip_onnx(tmp_path: Path, monkeypatch, torch_factory) -> None:  # type: ignore[no-untyped-def]
    def no_onnx(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("OnnxEmbedder must not be tried")

    monkeypatch.setattr(embedders, "OnnxEmbedder", no_onnx)
    build_embedder(TextMemSettings(data_dir=tmp_path, embedding_runtime="torch"))
    build_embedder(TextMemSettings(data_dir=tmp_path, embedding_device="cuda:0"))
    assert [c[1] for c in torch_factory.calls] == ["cpu", "cuda:0"]


def test_model_onnx_shipped_in_the_model_folder_is_used(exported, tmp_path: Path, no_export) -> None:  # type: ignore[no-untyped-def]
    onnx, _ = exported
    folder = tmp_path / "minilm"
    shutil.copytree(MODEL_DIR, folder, symlinks=True, ignore=shutil.ignore_patterns("model.safetensors"))
    shutil.copyfile(onnx.onnx_path, folder / "model.onnx")
    # No weights in the folder: only the shipped graph can serve it (a cache lookup would fail).
    emb = OnnxEmbedder(str(folder), cache_dir=tmp_path / "unused-cache")
    assert emb.onnx_path == folder / "model.onnx"
    assert not (tmp_path / "unused-cache").exists()
    np.testing.assert_allclose(emb.embed(TEXTS), onnx.embed(TEXTS), atol=1e-6)


def test_failed_export_leaves_no_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torch

    def half_written(model, args, path, **kwargs):  # type: ignore[no-untyped-def]
        Path(path).write_bytes(b"\x08\x07partial")
        raise RuntimeError("killed mid-export")

    monkeypatch.setattr(torch.onnx, "export", half_written)
    dest = tmp_path / "cache" / "m.onnx"
    with pytest.raises(RuntimeError, match="killed mid-export"):
        embedders.export_onnx(MODEL_DIR, dest)
    assert list(dest.parent.iterdir()) == []


def test_int8_quantization_is_made_once_and_stays_close_to_the_float_model(  # type: ignore[no-untyped-def]
    exported, tmp_path: Path, no_export, monkeypatch
) -> None:
    onnx, _ = exported
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copyfile(onnx.onnx_path, cache / onnx.onnx_path.name)
    quantized = OnnxEmbedder(cache_dir=cache, quantize="int8")
    assert quantized.onnx_path.name == onnx.onnx_path.stem + "-int8.onnx"
    # int8 MatMul weights (the word-embedding table, a Gather, stays float: most of the rest).
    assert quantized.onnx_path.stat().st_size < 0.75 * onnx.onnx_path.stat().st_size
    texts = [t for t in TEXTS if t.strip()]
    cos = _cos_rows(quantized.embed(texts), onnx.embed(texts))
    # Sentences stay within ~0.99; symbol- and emoji-heavy texts drift further (0.96 measured).
    assert cos.min() > 0.95 and cos.mean() > 0.98
    # Made once: a second embedder loads the cached file instead of quantizing again.
    calls: list[Path] = []
    monkeypatch.setattr(embedders, "quantize_onnx_int8", lambda src, dest: calls.append(dest))
    before = quantized.onnx_path.stat().st_mtime_ns
    again = OnnxEmbedder(cache_dir=cache, quantize="int8")
    assert calls == [] and again.onnx_path.stat().st_mtime_ns == before
    np.testing.assert_allclose(again.embed(texts), quantized.embed(texts), atol=1e-6)
    # Only the float graph and its int8 twin in the cache: the temporary file was renamed.
    assert sorted(p.name for p in cache.iterdir()) == sorted([onnx.onnx_path.name, quantized.onnx_path.name])


def test_unknown_quantization_is_refused(exported) -> None:  # type: ignore[no-untyped-def]
    onnx, _ = exported
    with pytest.raises(ValueError, match="quantization"):
        OnnxEmbedder(cache_dir=onnx.onnx_path.parent, quantize="int4")
