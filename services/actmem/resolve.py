"""Finding a model on this machine; never downloading one."""

from __future__ import annotations

from pathlib import Path

from shared.errors import FailedPrecondition


def _how_to_provide(name: str) -> str:
    return (
        f"To provide it: (1) on a machine with network access run `huggingface-cli download {name}` "
        "and copy its Hugging Face cache (~/.cache/huggingface/hub, or $HF_HOME/hub) to this machine, or "
        "(2) set MEMOS_MODEL_PATH (or model_name_or_path) to a local directory holding config.json, "
        "the tokenizer files and safetensors weights; for tests and demos `make tiny-model` builds one "
        "at models/tiny-qwen3 with no network."
    )


def resolve_model(name_or_path: str) -> Path:
    """A local directory for ``name_or_path``: the directory itself, or the model's snapshot in
    the local Hugging Face cache (looked up with ``local_files_only``)."""
    if not name_or_path:
        raise FailedPrecondition(
            "no model configured. " + _how_to_provide("Qwen/Qwen3-0.6B"), reason="MODEL_NOT_CONFIGURED"
        )
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise FailedPrecondition(
                f"model directory {p} has no config.json. " + _how_to_provide(name_or_path),
                reason="MODEL_NOT_AVAILABLE",
                metadata={"model": name_or_path},
            )
        return p
    looks_like_path = name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") != 1
    if not looks_like_path:
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(name_or_path, local_files_only=True))
        except Exception:  # noqa: BLE001 - every failure here means "not in the local cache"
            pass
    raise FailedPrecondition(
        f"model {name_or_path!r} is not available locally (not a directory, not in the local "
        "Hugging Face cache; models are never downloaded). " + _how_to_provide(name_or_path),
        reason="MODEL_NOT_AVAILABLE",
        metadata={"model": name_or_path},
    )
