"""Seed example 4 (KVCacheMemory) runs unchanged, except that the model is the tiny local one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from examples.seed_blocks import python_blocks

# As in tests/conftest.py, not imported from there: that module loads the textmem stack
# (Milvus Lite, MiniLM), which this test does not need and a bare GPU image lacks.
REPO_ROOT = Path(__file__).resolve().parents[2]
SEED_FILE = Path(os.environ.get("MEMOS_SEED_FILE", REPO_ROOT.parent / "shared" / "seed" / "memos_examples.md"))


def _json_after(label: str, out: str):  # type: ignore[no-untyped-def]
    """The JSON document printed right after the line ``label``."""
    rest = out.split(label + "\n", 1)[1]
    doc, _ = json.JSONDecoder().raw_decode(rest)
    return doc


def test_seed_example_4_runs_on_the_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    block = python_blocks(SEED_FILE.read_text(encoding="utf-8"))[4]
    assert '"Qwen/Qwen3-0.6B"' in block and "KVCacheMemory" in block
    script = tmp_path / "example_4.py"
    script.write_text(block.replace("Qwen/Qwen3-0.6B", str(tiny_model_dir)), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "MEMOS_ACTMEM_ADDR"}
    env["MEMOS_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    extracted = _json_after("===== Extract KVCacheItem =====", out)
    assert extracted["memory"]["num_layers"] == 2 and extracted["memory"]["size_bytes"] > 0
    assert extracted["records"]["composed_text_memory"].startswith("<|im_start|>user\nWhat is MemOS?")
    all_caches = _json_after("All caches:", out)
    assert [c["id"] for c in all_caches] == [extracted["id"]]
    assert _json_after("Retrieved:", out)["id"] == extracted["id"]
    merged = _json_after("Merged cache:", out)
    assert merged["num_layers"] == 2 and merged["size_bytes"] > extracted["memory"]["size_bytes"]
    after_delete = _json_after("After delete:", out)
    assert len(after_delete) == 1 and after_delete[0]["id"] != extracted["id"]
    assert "Dumped to tmp/kv_mem" in out
    loaded = _json_after("Loaded caches:", out)
    assert [c["id"] for c in loaded] == [after_delete[0]["id"]]
    dumped = sorted(p.name for p in (tmp_path / "tmp" / "kv_mem").iterdir())
    assert dumped == sorted([f"{after_delete[0]['id']}.json", f"{after_delete[0]['id']}.safetensors"])
