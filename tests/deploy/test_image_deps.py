"""Each service's image installs only its requirement files; these tests keep code and files in step.

docker/<service>.Dockerfile installs ``requirements/<file>`` (with what it includes via ``-r``)
and copies ``shared/``, ``gen/python/`` and that one service. So, for every service:

- its entry point must not import torch & co. unless its image carries them (gateway, ingest and
  scheduler images carry none): checked in a fresh interpreter, as the image would start it;
- every third-party module its code (``services/<name>/**`` and ``shared/**``) imports, even lazily
  inside a function, must come from a distribution its requirement files name directly;
- every module its entry point actually loads must come from those requirements or what they
  depend on (so a transitive import through an undeclared package shows up too);
- it imports no other service's package and no SDK module (neither is in its image);
- its Dockerfile installs exactly its requirement file, copies only its own service, is
  multi-stage, starts from a pinned base and runs as a non-root user.

The dev venv has every package installed, so a missing declaration is invisible to the other
tests and would only fail in the built image.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "requirements"

# The requirement file each image installs (docker/<service>.Dockerfile).
SERVICE_REQUIREMENTS = {
    "gateway": "runtime.txt",
    "ingest": "ingest.txt",
    "textmem": "textmem.txt",
    "actmem": "actmem.txt",
    "scheduler": "scheduler.txt",
}
SERVICES = sorted(SERVICE_REQUIREMENTS)
LEAN_SERVICES = ["gateway", "ingest", "scheduler"]
HEAVY_MODULES = ["torch", "transformers", "sentence_transformers", "vllm", "tensorflow", "jax"]
FIRST_PARTY = {"services", "shared", "memos"}
# Loaded in the dev venv only because it is there: the importer tolerates its absence.
OPTIONAL_PROBES = {
    "grpc_tools": "grpc/__init__.py imports it inside try/except ImportError (a grpc.tools shim)",
}


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _requirement_lines(path: Path) -> list[str]:
    """Requirement specifiers of a file, following ``-r`` includes."""
    out: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            out += _requirement_lines(path.parent / line.split(None, 1)[1])
        elif not line.startswith("-"):
            out.append(line)
    return out


@cache
def declared(service: str) -> frozenset[str]:
    """Distributions the service's requirement files name (normalised)."""
    return frozenset(
        _norm(Requirement(s).name) for s in _requirement_lines(REQUIREMENTS / SERVICE_REQUIREMENTS[service])
    )


@cache
def _depends_on(dist: str) -> frozenset[str]:
    try:
        reqs = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return frozenset()
    out = set()
    for spec in reqs:
        req = Requirement(spec)
        # Extras are not installed by a plain `pip install -r`; environment markers are.
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        out.add(_norm(req.name))
    return frozenset(out)


@cache
def installed_closure(service: str) -> frozenset[str]:
    """Every distribution pip installs for the service's requirement files."""
    seen: set[str] = set()
    todo = list(declared(service))
    while todo:
        d = todo.pop()
        if d not in seen:
            seen.add(d)
            todo += _depends_on(d)
    return frozenset(seen)


@cache
def module_distributions() -> dict[str, frozenset[str]]:
    return {mod: frozenset(_norm(d) for d in dists) for mod, dists in metadata.packages_distributions().items()}


def _code_files(service: str) -> list[Path]:
    return sorted([*(REPO / "services" / service).rglob("*.py"), *(REPO / "shared").rglob("*.py")])


def _absolute_imports(path: Path) -> list[tuple[str, int]]:
    """(dotted module, line) of every absolute import in a file, wherever it sits."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
    return found


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("service", LEAN_SERVICES)
def test_lean_entry_point_imports_no_heavy_module(service: str) -> None:
    # A fresh interpreter: this test process has torch loaded already (conftest imports textmem).
    loaded = json.loads(
        _run(
            f"import json, sys; import services.{service}.__main__; "
            f"print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))"
        )
    )
    assert loaded == [], f"importing services.{service}.__main__ imports {loaded}; its image has none of them"


@pytest.mark.parametrize("service", LEAN_SERVICES)
def test_lean_requirements_name_no_heavy_distribution(service: str) -> None:
    heavy = {"torch", "transformers", "sentence-transformers", "vllm", "tensorflow", "jax"}
    assert not (installed_closure(service) & heavy), (
        f"requirements/{SERVICE_REQUIREMENTS[service]} pulls in {sorted(installed_closure(service) & heavy)}"
    )


@pytest.mark.parametrize("service", SERVICES)
def test_every_third_party_import_is_declared(service: str) -> None:
    mods = module_distributions()
    problems = []
    for path in _code_files(service):
        rel = path.relative_to(REPO)
        for name, line in _absolute_imports(path):
            top = name.split(".", 1)[0]
            if top in sys.stdlib_module_names:
                continue
            if top == "services":
                if name != "services" and name.split(".")[1] != service:
                    problems.append(f"{rel}:{line}: imports {name}, another service's code (not in this image)")
                continue
            if top == "shared":
                continue
            if top == "memos":
                # Only generated stubs (gen/python) are in the image, not the SDK (sdk/python).
                sub = name.split(".")[1] if "." in name else ""
                if not (REPO / "gen" / "python" / "memos" / sub).is_dir():
                    problems.append(f"{rel}:{line}: imports {name}, which is not a generated stub package")
                continue
            dists = mods.get(top)
            if not dists:
                problems.append(f"{rel}:{line}: imports {top}, which no installed distribution provides")
            elif not dists & declared(service):
                problems.append(
                    f"{rel}:{line}: imports {top} (from {', '.join(sorted(dists))}), "
                    f"not named in requirements/{SERVICE_REQUIREMENTS[service]}"
                )
    assert not problems, "\n".join(problems)


@cache
def _baseline_modules() -> frozenset[str]:
    # What the interpreter loads before any of our code (site, .pth hooks such as setuptools').
    return frozenset(json.loads(_run("import json, sys; print(json.dumps(sorted(sys.modules)))")))


@pytest.mark.parametrize("service", SERVICES)
def test_modules_loaded_by_entry_point_are_installed_for_it(service: str) -> None:
    loaded = json.loads(
        _run(
            "import json, sys; "
            f"import services.{service}.__main__; "
            "print(json.dumps({m: getattr(v, '__file__', None) for m, v in list(sys.modules.items()) if '.' not in m}))"
        )
    )
    mods = module_distributions()
    allowed = installed_closure(service)
    problems = []
    for top, file in sorted(loaded.items()):
        if top in _baseline_modules() or top in sys.stdlib_module_names or top in FIRST_PARTY or top in OPTIONAL_PROBES:
            continue
        dists = mods.get(top)
        if dists is None and file and "site-packages" in file:
            # Extension modules that register a top-level name from inside a package (pandas'
            # _cyutility): the package directory they live in says whose they are.
            owner = Path(file.split("site-packages/", 1)[1]).parts[0].split(".", 1)[0]
            dists = mods.get(owner)
            if dists is None:
                problems.append(f"{top} ({file}) belongs to no known distribution")
                continue
        if dists is None:
            continue
        if not dists & allowed:
            problems.append(f"{top} (from {', '.join(sorted(dists))})")
    assert not problems, (
        f"importing services.{service}.__main__ loads modules that requirements/"
        f"{SERVICE_REQUIREMENTS[service]} does not install: " + "; ".join(problems)
    )


def _dockerfile(service: str) -> str:
    path = REPO / "docker" / f"{service}.Dockerfile"
    assert path.is_file(), f"{path} is missing"
    return path.read_text()


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_installs_only_its_service(service: str) -> None:
    text = _dockerfile(service)
    installs = set(re.findall(r"pip install[^\n]*?-r\s+\S*?/requirements/([\w.-]+)", text))
    assert installs == {SERVICE_REQUIREMENTS[service]}, f"{service} image installs {installs}"
    copied = set(re.findall(r"^COPY\s+services/([\w-]+)/", text, re.M))
    assert copied == {service}, f"{service} image copies services {copied}"
    assert re.search(rf'CMD \["-m", "services\.{service}"\]', text)


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_is_multi_stage_pinned_and_non_root(service: str) -> None:
    text = _dockerfile(service)
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2, "multi-stage: a build stage and a runtime stage"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M)
    assert base, "the base image is an ARG with a default"
    # An exact patch release (or a digest), never a floating tag.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base.group(1)), base.group(1)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root"), f"runs as {users}"
    assert (REPO / ".dockerignore").is_file()


def test_actmem_image_has_a_vllm_variant() -> None:
    text = _dockerfile("actmem")
    assert re.search(r"^ARG VARIANT=transformers$", text, re.M)
    assert re.search(r'vllm\) .*"vllm==\$\{VLLM_VERSION\}"', text)
