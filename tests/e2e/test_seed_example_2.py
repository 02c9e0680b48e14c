"""The seed's example 2 (both blocks), unchanged except for its two public URLs.

The report and the image are served from a loopback HTTP server this test
starts, under the same paths as the seed's URLs; the suite runs as processes
(``tools/run_suite.py``: textmem, ingest, gateway) with
MEMOS_FETCH_ALLOW_HOSTS=127.0.0.1, as a private deployment fetching from an
internal file server would. No LLM is configured, so the example's
``mode="fine"`` falls back to fast mode and says so.
"""

from __future__ import annotations

import os
import re
import signal

import pytest

from examples.seed_blocks import python_blocks
from tests.conftest import SEED_FILE
from tests.e2e.launcher import launch_suite
from tests.e2e.test_seed_examples import run_example, search_data
from tests.ingest.helpers import FileServer, make_png

pytestmark = pytest.mark.e2e

# Block numbers of example 2's two Python blocks among the seed's blocks.
EXAMPLE_2_FILE, EXAMPLE_2_MIXED = 2, 3
# The seed's public origins are read from the seed itself and swapped for the loopback server;
# no test names (or could ever reach) a public address.
_ORIGIN = re.compile(r"https?://[^/\s\"']+")
REPORT_PATH = (
    "/graph-test/algorithm/2025_11_13/1763043889_1763043782_PM1%E8%BD%A6%E9%97%B4PMT%E9%9D%B4%E5%8E%8B"
    "%E8%BE%B9%E5%8E%8B%E5%8E%8B%E5%8A%9B%E6%97%A0%E6%B3%95%E5%BB%BA%E7%AB%8B%E6%95%85%E9%9A%9C%E6%8A%A5"
    "%E5%91%8A20240720.md"
)
IMAGE_PATH = "/%E5%9B%BE%E7%89%871.jpeg"

# Written for this test: a fault report in the spirit of the seed's (its content is not public).
REPORT = """# PM1车间PMT靴压边压压力无法建立故障报告 (2024-07-20)

## 1. Event

On July 20, 2024, during the PMT boot-pressure startup test of the PM1 workshop, the edge pressures
on the drive side and the operator side could not be established. The interlock requires 2.5 bar
on both sides before the main drive may start, so the drive could not run.

## 2. Troubleshooting

- The PLC output signals to the proportional valves were measured and found normal.
- The hydraulic pipelines and the pressure valves were inspected: no leaks, no blockage.
- The pressure transmitters were compared against a reference gauge: within tolerance.

## 3. Root cause

Inside the PLC cabinet, the negative terminal of the proportional valve's DC 24V power supply had
poor contact. The terminal block had been short-jumpered, and the jumper loosened over time, so
the valve coils saw an unstable supply and the edge pressure could not build up.

## 4. Corrective action

The negative incoming lines were re-connected in parallel, bypassing the short jumper. After the
fix the edge pressures reached 2.5 bar within 20 seconds and the equipment returned to normal.

## 5. Recommendations

1. Replace the short-jumpered terminal blocks in batches during the next shutdown.
2. Inspect instruments whose service life is uncertain.
3. When several devices fail together, trace common-mode causes from shared buses and power
   supplies first.
"""


@pytest.fixture(scope="module")
def seed_blocks() -> list[str]:
    if not SEED_FILE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"seed file missing at {SEED_FILE}")
        pytest.skip(f"seed file not found at {SEED_FILE} (set MEMOS_SEED_FILE)")
    return python_blocks(SEED_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def file_server():  # type: ignore[no-untyped-def]
    fs = FileServer(
        files={
            REPORT_PATH: ("text/markdown; charset=utf-8", REPORT.encode()),
            IMAGE_PATH: ("image/jpeg", make_png()),  # declared wrong on purpose: the bytes are sniffed
        }
    )
    with fs.serve():
        yield fs


@pytest.fixture(scope="module")
def suite_with_ingest(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    gateway, proc, startup = launch_suite(
        tmp_path_factory.mktemp("suite-data"), drop=("MEMOS_LLM_BASE_URL",), MEMOS_FETCH_ALLOW_HOSTS="127.0.0.1"
    )
    assert "ingest serving" in startup, startup
    yield gateway
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert "ingest stopped (0)" in out, out


def localise(block: str, server: FileServer) -> str:
    assert REPORT_PATH in block
    for origin in set(_ORIGIN.findall(block)):
        block = block.replace(origin, server.base)
    assert REPORT_PATH in block and server.base + REPORT_PATH in block
    return block


def file_memories(data: dict) -> list[dict]:
    (bucket,) = [b for b in data["text_mem"] if b["cube_id"] == "cube_test_user_2"]
    return [
        m
        for m in bucket["memories"]
        if any(s["type"] == "file" and "chunk_total" in s.get("file", {}) for s in m["metadata"]["sources"])
    ]


def test_example_2_both_blocks(seed_blocks, file_server, suite_with_ingest, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "MEMOS_GATEWAY_ADDR": suite_with_ingest}

    out = run_example(localise(seed_blocks[EXAMPLE_2_FILE - 1], file_server), tmp_path, env, "example_2_file")
    assert "stored with fast mode" in out  # fine without an LLM says so
    assert "not stored" not in out  # every part was usable
    found = file_memories(search_data(out))
    assert found, out
    text = "\n".join(m["memory"] for m in found)
    assert "PLC cabinet" in text or "DC 24V" in text or "2.5 bar" in text
    src = next(s for s in found[0]["metadata"]["sources"] if s["type"] == "file")
    assert src["file"]["file_id"] == "file_123" and src["file"]["filename"] == "report.md"
    assert src["file"]["url"] == file_server.base + REPORT_PATH
    assert src["role"] == "user" and src["message_index"] == 0

    out = run_example(localise(seed_blocks[EXAMPLE_2_MIXED - 1], file_server), tmp_path, env, "example_2_mixed")
    assert "not described" in out  # the image is a source, not a description, without a vision model
    assert "not stored" not in out
    data = search_data(out)
    found = file_memories(data)
    names = {s["file"]["filename"] for m in found for s in m["metadata"]["sources"] if s["type"] == "file"}
    assert "report.pdf" in names  # block 2 names the markdown report "report.pdf": the bytes decide
    assert any("DC 24V" in m["memory"] or "PLC cabinet" in m["memory"] for m in found)
    assert [s["file"]["media_type"] for m in found for s in m["metadata"]["sources"] if s["type"] == "file"][0] == (
        "text/markdown"
    )
    # The fetches reached the loopback server with the seed's paths.
    assert sum(1 for s in file_server.seen if s["path"] == REPORT_PATH) == 2
