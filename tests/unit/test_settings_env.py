"""shared/settings.py and the services' settings: MEMOS_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.gateway.settings import GatewaySettings
from services.textmem.settings import TextMemSettings
from shared.settings import ClientSettings, ServerSettings, default_data_dir


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("MEMOS_"):
            monkeypatch.delenv(name)


def test_server_defaults() -> None:
    s = ServerSettings()
    assert s.listen_addr == "127.0.0.1:0"
    assert s.grace_period_s == 10.0
    assert s.max_request_bytes == 16 * 1024 * 1024
    assert s.log_level == "INFO" and s.log_format == "json"
    assert s.enable_reflection is True


def test_memos_prefixed_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_LISTEN_ADDR", "0.0.0.0:6000")
    monkeypatch.setenv("MEMOS_GRACE_PERIOD_S", "2.5")
    monkeypatch.setenv("MEMOS_MAX_REQUEST_BYTES", "2048")
    monkeypatch.setenv("MEMOS_LOG_LEVEL", "debug")
    monkeypatch.setenv("MEMOS_ENABLE_REFLECTION", "false")
    s = ServerSettings()
    assert s.listen_addr == "0.0.0.0:6000"
    assert s.grace_period_s == 2.5
    assert s.max_request_bytes == 2048
    assert s.log_level == "DEBUG"
    assert s.enable_reflection is False


def test_variable_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("memos_listen_addr", "127.0.0.1:7000")
    assert ServerSettings().listen_addr == "127.0.0.1:7000"


def test_unprefixed_and_unknown_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_ADDR", "0.0.0.0:1")
    monkeypatch.setenv("MEMOS_NO_SUCH_SETTING", "x")
    assert ServerSettings().listen_addr == "127.0.0.1:0"


def test_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_LISTEN_ADDR", "0.0.0.0:6000")
    assert ServerSettings(listen_addr="127.0.0.1:1").listen_addr == "127.0.0.1:1"


def test_settings_are_frozen() -> None:
    s = ServerSettings()
    with pytest.raises(ValidationError):
        s.listen_addr = "elsewhere"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("cls", "name", "value"),
    [
        (ServerSettings, "MEMOS_GRACE_PERIOD_S", "-1"),
        (ServerSettings, "MEMOS_GRACE_PERIOD_S", "soon"),
        (ServerSettings, "MEMOS_MAX_REQUEST_BYTES", "100"),
        (ServerSettings, "MEMOS_MAX_RESPONSE_BYTES", "1e3x"),
        (ServerSettings, "MEMOS_ENABLE_REFLECTION", "maybe"),
        (ClientSettings, "MEMOS_DEFAULT_DEADLINE_S", "0"),
        (ClientSettings, "MEMOS_RETRY_MAX_ATTEMPTS", "0"),
        (ClientSettings, "MEMOS_RETRY_MAX_ATTEMPTS", "6"),
        (TextMemSettings, "MEMOS_EMBEDDER", "bogus"),
        (TextMemSettings, "MEMOS_GRAPH_STORE", "cassandra"),
        (TextMemSettings, "MEMOS_WINDOW_SIZE", "0"),
        (TextMemSettings, "MEMOS_WINDOW_SIZE", "65"),
        (TextMemSettings, "MEMOS_WINDOW_OVERLAP", "-1"),
        (TextMemSettings, "MEMOS_EMBEDDING_DIM", "4"),
        (TextMemSettings, "MEMOS_EMBEDDING_BATCH_SIZE", "0"),
        (TextMemSettings, "MEMOS_QUERY_CACHE_SIZE", "-5"),
        (TextMemSettings, "MEMOS_MAX_TEXT_CHARS", "0"),
        (GatewaySettings, "MEMOS_MAX_CUBES_PER_REQUEST", "0"),
        (GatewaySettings, "MEMOS_SEARCH_TIMEOUT_S", "0"),
        (GatewaySettings, "MEMOS_RETRY_MAX_ATTEMPTS", "9"),
    ],
)
def test_bad_values_fail_validation_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, cls: type, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as exc:
        cls()
    field = name.removeprefix("MEMOS_").lower()
    assert [e["loc"] for e in exc.value.errors()] == [(field,)]


def test_textmem_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEMOS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEMOS_SQLITE_PATH", str(tmp_path / "g.sqlite3"))
    monkeypatch.setenv("MEMOS_EMBEDDER", "openai")
    monkeypatch.setenv("MEMOS_EMBEDDING_URL", "http://localhost:8000/v1")
    monkeypatch.setenv("MEMOS_EMBEDDING_DIM", "1024")
    monkeypatch.setenv("MEMOS_WINDOW_SIZE", "8")
    monkeypatch.setenv("MEMOS_WINDOW_OVERLAP", "2")
    monkeypatch.setenv("MEMOS_QUERY_CACHE_SIZE", "0")
    s = TextMemSettings()
    assert s.data_dir == tmp_path / "data"
    assert s.sqlite_path == tmp_path / "g.sqlite3"
    assert (s.embedder, s.embedding_url, s.embedding_dim) == ("openai", "http://localhost:8000/v1", 1024)
    assert (s.window_size, s.window_overlap, s.query_cache_size) == (8, 2, 0)
    assert s.listen_addr == "127.0.0.1:50052"


def test_textmem_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    s = TextMemSettings()
    assert s.data_dir == tmp_path / "memos"
    assert s.sqlite_path is None and s.milvus_uri == ""
    assert (s.graph_store, s.embedder, s.embedding_dim) == ("sqlite", "local", 384)
    assert s.window_overlap < s.window_size


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "memos"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_data_dir() == Path.home() / ".local" / "share" / "memos"
    monkeypatch.setenv("XDG_DATA_HOME", "")
    assert default_data_dir() == Path.home() / ".local" / "share" / "memos"


def test_gateway_reads_server_and_client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_TEXTMEM_ADDR", "textmem:50052")
    monkeypatch.setenv("MEMOS_RETRY_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("MEMOS_GRACE_PERIOD_S", "1")
    s = GatewaySettings()
    assert (s.textmem_addr, s.retry_max_attempts, s.grace_period_s) == ("textmem:50052", 2, 1.0)


@pytest.mark.parametrize(("size", "overlap"), [("1", None), ("4", "4"), ("2", "10")])
def test_window_settings_that_validate_are_usable(monkeypatch: pytest.MonkeyPatch, size: str, overlap: str | None):
    monkeypatch.setenv("MEMOS_WINDOW_SIZE", size)
    if overlap is not None:
        monkeypatch.setenv("MEMOS_WINDOW_OVERLAP", overlap)
    try:
        s = TextMemSettings()
    except ValidationError:
        return  # refusing the configuration at start is a fine answer
    assert s.window_overlap < s.window_size
