"""``memos``: the command line of memos.

Exit status: 0 ok; 1 failure; 2 usage or input error (bad arguments, bad
address, malformed file, a request the gateway calls invalid); 3 gateway or
service unreachable, or timed out; 4 not found; 5 permission denied; 130
interrupted. Errors are one line on stderr, ``memos: <reason>``, never a
traceback (``MEMOS_CLI_DEBUG=1`` shows one).
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_NOT_FOUND = 4
EXIT_DENIED = 5
EXIT_INTERRUPTED = 130

DEFAULT_ADDR = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 30.0
CHAT_TIMEOUT_S = 300.0  # a chat streams an LLM's answer: a longer default deadline
EXPORT_PAGE_SIZE = 200
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")


class CliError(Exception):
    """A failure to report as ``memos: <message>`` with exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def check_address(addr: str) -> str:
    """``addr`` if it is a gRPC target this CLI can dial (HOST:PORT, [IPv6]:PORT, dns:///HOST:PORT,
    ipv4:/ipv6: or unix:PATH); raises CliError(EXIT_USAGE) otherwise, before any connection attempt."""
    bad = CliError(f"bad address {addr!r}: expected HOST:PORT, e.g. 127.0.0.1:50051", EXIT_USAGE)
    if addr.startswith(("unix:", "unix-abstract:")):
        if addr.partition(":")[2]:
            return addr
        raise bad
    target = addr
    for prefix in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if target.startswith(prefix):
            target = target[len(prefix) :]
            break
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise bad
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise bad from None
        return addr
    try:
        ipaddress.IPv4Address(host)
        return addr
    except ValueError:
        pass
    if not _HOSTNAME.match(host) or host.replace(".", "").isdigit():
        raise bad
    return addr


def error_exit_code(err: Any) -> int:
    from shared.errors import Code

    code = err.code
    if code in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED):
        return EXIT_UNAVAILABLE
    if code == Code.NOT_FOUND:
        return EXIT_NOT_FOUND
    if code in (Code.PERMISSION_DENIED, Code.UNAUTHENTICATED):
        return EXIT_DENIED
    if code in (Code.INVALID_ARGUMENT, Code.OUT_OF_RANGE):
        return EXIT_USAGE
    return EXIT_FAILURE


def describe_error(err: Any, addr: str, timeout: float | None) -> str:
    """One line for a MemosError; bare transport failures get a plain-words explanation."""
    from shared.errors import Code

    bare = err.reason == err.code.name  # no ErrorInfo: gRPC itself failed the call
    if err.code == Code.UNAVAILABLE and bare:
        return f"cannot reach the gateway at {addr} ({one_line(err.message)})"
    if err.code == Code.DEADLINE_EXCEEDED and bare:
        limit = f" after {timeout:g}s" if timeout else ""
        return f"the gateway at {addr} did not answer{limit} (DEADLINE_EXCEEDED); try a larger --timeout"
    return one_line(f"{err.code.name}: {err.reason}: {err.message}")


# output --------------------------------------------------------------------------------------------------------


def emit_json(value: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json.dumps(value, ensure_ascii=False) + "\n")


def warn(message: str) -> None:
    print(f"memos: {one_line(message)}", file=sys.stderr, flush=True)


def _status_dict(status: Any) -> dict[str, Any] | None:
    if status is None or status.code == 0:
        return None
    from shared.grpc_errors import from_status_proto

    err = from_status_proto(status)
    return {"code": err.code.name, "reason": err.reason, "message": err.message}


class Progress:
    """A plain progress bar on stderr: ``import [#####-----] 12/40 messages 30%``."""

    def __init__(self, total: int, label: str, enabled: bool, width: int = 30) -> None:
        self.total, self.label, self.enabled, self.width = max(total, 1), label, enabled, width
        self.done = 0
        self._shown = False

    def advance(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        frac = min(self.done / self.total, 1.0)
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        sys.stderr.write(f"\r{self.label} [{bar}] {self.done}/{self.total} messages {frac:4.0%}")
        sys.stderr.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._shown = False


# commands ------------------------------------------------------------------------------------------------------


class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.addr: str = args.addr
        self.timeout: float | None = args.timeout
        self.json: bool = args.json
        self._client: Any = None

    @property
    def user(self) -> str:
        if not self.args.user:
            raise CliError("no user: pass --user or set MEMOS_USER", EXIT_USAGE)
        return str(self.args.user)

    @property
    def call_timeout(self) -> float:
        return self.timeout if self.timeout is not None else DEFAULT_TIMEOUT_S

    def client(self) -> Any:
        if self._client is None:
            check_address(self.addr)
            from memos.client import MemosClient

            self._client = MemosClient(self.addr)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _memory_dict(item: Any, score: float | None = None) -> dict[str, Any]:
    from memos.client._convert import memory_to_dict

    return memory_to_dict(item, score)


def _added_dicts(memories: Iterable[Any]) -> list[dict[str, Any]]:
    from memos.client._convert import MEMORY_TYPE_NAMES

    return [
        {
            "memory_id": m.memory_id,
            "cube_id": m.cube_id,
            "memory_type": MEMORY_TYPE_NAMES.get(m.memory_type, "LongTermMemory"),
            "memory": m.memory,
        }
        for m in memories
    ]


def _part_errors(resp: Any) -> list[dict[str, Any]]:
    return [
        {
            "cube_id": p.cube_id,
            "message_index": p.message_index,
            "part_index": p.part_index,
            "status": _status_dict(p.status),
        }
        for p in resp.part_errors
    ]


def _load_messages(source: str) -> list[Any]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {source}: {getattr(exc, 'strerror', None) or exc}", EXIT_USAGE) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{source}:{exc.lineno}: invalid JSON ({exc.msg})", EXIT_USAGE) from None
    if isinstance(value, dict) and "messages" in value:
        value = value["messages"]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise CliError(f"{source}: expected a JSON list of messages", EXIT_USAGE)
    return value


def cmd_add(ctx: Context) -> int:
    args = ctx.args
    if args.messages and args.text:
        raise CliError("give TEXT arguments or --messages, not both", EXIT_USAGE)
    if args.messages:
        messages = _load_messages(args.messages)
    elif args.text:
        messages = [{"role": args.role, "content": t} for t in args.text]
    else:
        raise CliError("nothing to add: give TEXT arguments or --messages FILE", EXIT_USAGE)
    resp = ctx.client().add_memories(
        ctx.user,
        args.cube,
        messages,
        mode=args.mode,
        async_mode="async" if args.async_ else "sync",
        session_id=args.session,
        custom_tags=args.tag,
        timeout=ctx.call_timeout,
    )
    parts = _part_errors(resp)
    if ctx.json:
        emit_json(
            {
                "message": resp.message,
                "memories": _added_dicts(resp.memories),
                "notices": list(resp.notices),
                "part_errors": parts,
                "task_ids": list(resp.task_ids),
            }
        )
    else:
        n = len(resp.memories)
        print(f"added {n} {'memory' if n == 1 else 'memories'} to {', '.join(args.cube)}")
        for m in resp.memories:
            print(f"{m.memory_id}\t{m.cube_id}\t{one_line(m.memory)}")
        for task in resp.task_ids:
            print(f"queued task {task}")
        for notice in resp.notices:
            warn(f"note: {notice}")
    for p in parts:
        status = p["status"] or {}
        warn(f"cube {p['cube_id']} message {p['message_index']} part {p['part_index']}: {status.get('message', '')}")
    return EXIT_FAILURE if parts else EXIT_OK


def _parse_filter(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--filter is not JSON ({exc.msg})", EXIT_USAGE) from None
    if not isinstance(value, dict):
        raise CliError("--filter must be a JSON object", EXIT_USAGE)
    return value


def cmd_search(ctx: Context) -> int:
    args = ctx.args
    resp = ctx.client().search_memories(
        ctx.user,
        args.cube,
        args.query,
        top_k=args.top_k,
        filter=_parse_filter(args.filter),
        include_preference=args.preferences,
        session_id=args.session,
        timeout=ctx.call_timeout,
    )
    failed = [b for b in resp.text_mem if b.status.code != 0]
    if ctx.json:
        emit_json(
            {
                "query": args.query,
                "ranked": [_memory_dict(s.item, s.score) for s in resp.ranked],
                "cubes": [
                    {"cube_id": b.cube_id, "total": b.total, "status": _status_dict(b.status)} for b in resp.text_mem
                ],
                "preferences": [_memory_dict(s.item, s.score) for b in resp.pref_mem for s in b.memories],
            }
        )
    else:
        for s in resp.ranked:
            print(f"{s.score:.4f}\t{s.item.metadata.cube_id}\t{one_line(s.item.memory)}")
        if args.preferences:
            for b in resp.pref_mem:
                for s in b.memories:
                    print(f"{s.score:.4f}\t{b.cube_id}\tpreference: {one_line(s.item.memory)}")
        if not resp.ranked:
            warn("no memories found")
    for b in failed:
        warn(f"cube {b.cube_id} did not answer: {one_line(b.status.message)}")
    if failed and len(failed) == len(resp.text_mem):
        return EXIT_UNAVAILABLE
    return EXIT_OK


def cmd_chat(ctx: Context) -> int:
    from google.protobuf import json_format

    from memos.gateway.v1 import gateway_pb2
    from shared.grpc_errors import from_status_proto

    args = ctx.args
    query = sys.stdin.read().strip() if args.query == "-" else args.query
    if not query:
        raise CliError("empty query", EXIT_USAGE)
    events = ctx.client().chat(
        ctx.user,
        query,
        readable_cube_ids=args.cube,
        writable_cube_ids=args.cube if args.save else (),
        session_id=args.session,
        top_k=args.top_k,
        system_prompt=args.system_prompt,
        add_message_on_answer=args.save,
        timeout=ctx.timeout if ctx.timeout is not None else CHAT_TIMEOUT_S,
    )
    wrote_text = False
    code = EXIT_OK
    for event in events:
        if ctx.json:
            emit_json(json_format.MessageToDict(event, preserving_proto_field_name=True))
            sys.stdout.flush()
        kind = event.WhichOneof("event")
        if kind == "text" and not ctx.json:
            sys.stdout.write(event.text.delta)
            sys.stdout.flush()
            wrote_text = True
        elif kind == "status" and args.verbose:
            warn(f"{event.status.stage}: {event.status.detail}")
        elif kind == "references":
            for b in event.references.failed_cubes:
                warn(f"cube {b.cube_id} did not answer: {one_line(b.status.message)}")
            if args.verbose:
                for s in event.references.memories:
                    warn(f"reference {s.score:.3f} {s.item.metadata.cube_id}: {s.item.memory}")
        elif kind == "end":
            if wrote_text:
                sys.stdout.write("\n")
                wrote_text = False
            if args.verbose and event.end.source == gateway_pb2.ANSWER_SOURCE_RETRIEVED_MEMORIES:
                warn("no LLM configured: the answer lists retrieved memories")
        elif kind == "error":
            err = from_status_proto(event.error)
            if wrote_text:
                sys.stdout.write("\n")
                wrote_text = False
            warn(describe_error(err, ctx.addr, ctx.timeout))
            code = error_exit_code(err)
    if wrote_text:
        sys.stdout.write("\n")
    return code


_ROLE_NAMES = {0: "unspecified", 1: "reader", 2: "writer", 3: "none"}


def _cube_dict(cube: Any) -> dict[str, Any]:
    return {
        "cube_id": cube.cube_id,
        "owner_id": cube.owner_id,
        "name": cube.name,
        "role": "owner" if cube.owned else _ROLE_NAMES.get(cube.my_role, "unspecified"),
        "owned": cube.owned,
    }


def cmd_cubes(ctx: Context) -> int:
    args = ctx.args
    client = ctx.client()
    if args.cubes_command == "list":
        cubes = [_cube_dict(c) for c in client.list_cubes(ctx.user, timeout=ctx.call_timeout).cubes]
        if ctx.json:
            emit_json(cubes)
        else:
            for c in cubes:
                print(f"{c['cube_id']}\t{c['role']}\t{c['owner_id']}\t{c['name']}")
        return EXIT_OK
    if args.cubes_command == "create":
        cube = _cube_dict(client.create_cube(ctx.user, args.cube, name=args.name, timeout=ctx.call_timeout).cube)
        emit_json(cube) if ctx.json else print(f"created cube {cube['cube_id']}")
        return EXIT_OK
    if args.cubes_command == "share":
        cube = _cube_dict(
            client.share_cube(ctx.user, args.cube, args.target_user, args.role, timeout=ctx.call_timeout).cube
        )
        if ctx.json:
            emit_json({**cube, "target_user_id": args.target_user, "target_role": args.role})
        elif args.role == "none":
            print(f"revoked {args.target_user}'s access to cube {args.cube}")
        else:
            print(f"shared cube {args.cube} with {args.target_user} as {args.role}")
        return EXIT_OK
    if args.cubes_command == "delete":
        if not args.yes:
            raise CliError(f"deleting cube {args.cube} deletes its memories; add --yes to confirm", EXIT_USAGE)
        resp = client.delete_cube(ctx.user, args.cube, timeout=ctx.call_timeout)
        if ctx.json:
            emit_json({"cube_id": args.cube, "deleted_memories": resp.deleted_memories})
        else:
            print(f"deleted cube {args.cube} ({resp.deleted_memories} memories)")
        return EXIT_OK
    raise CliError("cubes needs a command: list, create, share or delete", EXIT_USAGE)


def cmd_import(ctx: Context) -> int:
    from memos.cli.importers import ImportFileError, read_import_file
    from shared.errors import MemosError

    args = ctx.args
    path = Path(args.file)
    try:
        plan = read_import_file(path, args.format, args.batch, args.session)
    except ImportFileError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    client = ctx.client()
    user = ctx.user
    progress_on = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    progress = Progress(plan.message_count, "import", progress_on)
    started = time.monotonic()
    sent = added = 0
    part_errors: list[dict[str, Any]] = []
    try:
        for batch in plan.batches:
            try:
                resp = client.add_memories(
                    user,
                    [args.cube],
                    batch.messages,
                    mode=args.mode,
                    session_id=batch.session_id,
                    custom_tags=args.tag,
                    timeout=ctx.call_timeout,
                )
            except MemosError as err:
                progress.close()
                raise CliError(
                    f"{describe_error(err, ctx.addr, ctx.timeout)} (at {batch.where}; "
                    f"{sent} of {plan.message_count} messages imported before)",
                    error_exit_code(err),
                ) from None
            sent += len(batch.messages)
            added += len(resp.memories)
            part_errors.extend({**p, "at": batch.where} for p in _part_errors(resp))
            progress.advance(len(batch.messages))
    finally:
        progress.close()
    summary = {
        "file": str(path),
        "format": plan.format,
        "cube_id": args.cube,
        "messages": sent,
        "requests": len(plan.batches),
        "memories_added": added,
        "part_errors": part_errors,
        "seconds": round(time.monotonic() - started, 3),
    }
    if ctx.json:
        emit_json(summary)
    else:
        print(
            f"imported {sent} messages ({plan.format}, {len(plan.batches)} requests) from {path} into cube "
            f"{args.cube}: {added} memories added, {len(part_errors)} part errors, {summary['seconds']:.1f}s"
        )
    for p in part_errors:
        warn(f"{p['at']}: message {p['message_index']} part {p['part_index']}: {(p['status'] or {}).get('message')}")
    return EXIT_FAILURE if part_errors else EXIT_OK


def cmd_export(ctx: Context) -> int:
    args = ctx.args
    client = ctx.client()
    user = ctx.user
    out: TextIO
    close_out: Callable[[], None] = lambda: None  # noqa: E731
    if args.output and args.output != "-":
        try:
            out = open(args.output, "w", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise CliError(f"cannot write {args.output}: {exc.strerror or exc}", EXIT_USAGE) from None
        close_out = out.close
    else:
        out = sys.stdout
    count = 0
    token = ""
    try:
        while True:
            page = client.list_memories(
                user, args.cube, page_size=args.page_size, page_token=token, timeout=ctx.call_timeout
            )
            for item in page.memories:
                emit_json(_memory_dict(item), out)
                count += 1
            token = page.next_page_token
            if not token:
                break
    finally:
        close_out()
    where = f" to {args.output}" if args.output and args.output != "-" else ""
    warn(f"exported {count} {'memory' if count == 1 else 'memories'} from cube {args.cube}{where}")
    return EXIT_OK


def _health_targets(ctx: Context) -> list[tuple[str, str]]:
    from memos.cli.serve import DEFAULT_LISTEN, SUITE

    names: list[str] = ctx.args.service or ["gateway"]
    unknown = [n for n in names if n != "all" and n not in DEFAULT_LISTEN]
    if unknown:
        raise CliError(f"unknown service {unknown[0]!r}; one of {', '.join(DEFAULT_LISTEN)} or all", EXIT_USAGE)
    if "all" in names:
        names = list(SUITE)
    if ctx.args.target and len(names) != 1:
        raise CliError("--target needs exactly one service", EXIT_USAGE)
    targets = []
    for name in dict.fromkeys(names):
        if ctx.args.target:
            addr = ctx.args.target
        elif name == "gateway":
            addr = ctx.addr
        else:
            up = name.upper()
            addr = os.environ.get(f"MEMOS_{up}_ADDR") or os.environ.get(f"MEMOS_{up}_LISTEN") or DEFAULT_LISTEN[name]
        targets.append((name, check_address(addr)))
    return targets


_HEALTH_CODES = {"NOT_FOUND": EXIT_NOT_FOUND}  # a --grpc-service the server does not know


def cmd_health(ctx: Context) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    results = []
    worst = EXIT_OK
    for name, addr in _health_targets(ctx):
        with grpc.insecure_channel(addr) as channel:
            try:
                resp = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=ctx.args.grpc_service),
                    timeout=ctx.timeout if ctx.timeout is not None else 5.0,
                )
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
                detail = ""
                code = EXIT_OK if resp.status == health_pb2.HealthCheckResponse.SERVING else EXIT_FAILURE
            except grpc.RpcError as exc:
                unreachable = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                status = "UNREACHABLE" if unreachable else exc.code().name
                detail = one_line(exc.details() or "")
                code = EXIT_UNAVAILABLE if unreachable else _HEALTH_CODES.get(status, EXIT_FAILURE)
        results.append({"service": name, "address": addr, "status": status, "detail": detail})
        worst = max(worst, code)
    if ctx.json:
        emit_json(results)
    else:
        for r in results:
            print(f"{r['service']}\t{r['address']}\t{r['status']}" + (f"\t{r['detail']}" if r["detail"] else ""))
    bad = [r for r in results if r["status"] != "SERVING"]
    if bad:
        warn(", ".join(f"{r['service']} at {r['address']} is {r['status']}" for r in bad))
    return worst


def cmd_serve(ctx: Context) -> int:
    from memos.cli import serve

    args = ctx.args
    if args.data_dir:
        os.environ["MEMOS_DATA_DIR"] = str(Path(args.data_dir).expanduser().resolve())
    if args.listen:
        check_address(args.listen)
    try:
        if args.service == "all":
            if args.listen:
                raise CliError("--listen needs one service; set MEMOS_<NAME>_LISTEN for the suite", EXIT_USAGE)
            return serve.run_suite()
        return serve.run_service(args.service, args.listen)
    except serve.ServeError as exc:
        raise CliError(str(exc)) from None


# parser --------------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line: ``memos: <problem> (see 'memos <command> --help')``."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"memos: {one_line(message)} (see '{self.prog} --help')\n")
        sys.exit(EXIT_USAGE)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _global_options(parser: argparse.ArgumentParser) -> None:
    # Accepted before and after the command; SUPPRESS keeps a command's parser from resetting them.
    s = argparse.SUPPRESS
    parser.add_argument("--addr", default=s, help="gateway address (MEMOS_GATEWAY_ADDR, else 127.0.0.1:50051)")
    parser.add_argument("--user", default=s, help="user id (MEMOS_USER, else $USER)")
    parser.add_argument("--timeout", type=_positive_float, default=s, help="seconds per call (default 30; chat 300)")
    parser.add_argument("--json", action="store_true", default=s, help="machine-readable JSON on stdout")


def build_parser() -> argparse.ArgumentParser:
    from memos.cli.importers import FORMATS
    from memos.cli.serve import SERVICES

    common = _Parser(add_help=False)
    _global_options(common)
    parser = _Parser(
        prog="memos",
        description="Memory OS for LLM apps: serve the suite, add and search memories, chat, manage cubes.",
        epilog="exit status: 0 ok, 1 failure, 2 usage or input error, 3 unreachable or timed out, "
        "4 not found, 5 permission denied, 130 interrupted",
    )
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help_text: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common], **kw)

    p = command("serve", "run the suite (textmem, ingest, scheduler, gateway) or one service as processes")
    p.add_argument("service", nargs="?", default="all", choices=["all", *SERVICES])
    p.add_argument("--listen", help="listen address of the one service (default MEMOS_<NAME>_LISTEN or its port)")
    p.add_argument("--data-dir", help="MEMOS_DATA_DIR for the services")
    p.set_defaults(func=cmd_serve)

    p = command("health", "grpc.health.v1 check of the gateway (default), some services, or all")
    # no choices=: argparse (3.11) rejects an empty nargs="*" list against them; checked in _health_targets
    p.add_argument("service", nargs="*", help=f"{', '.join(SERVICES)} or all (default: gateway)")
    p.add_argument("--target", help="address to check (one service only; default: MEMOS_<NAME>_ADDR)")
    p.add_argument("--grpc-service", default="", help="service name to ask about (default: the server as a whole)")
    p.set_defaults(func=cmd_health)

    p = command("add", "add messages to cubes (created if new)")
    p.add_argument("text", nargs="*", help="message texts, one message each")
    p.add_argument("-c", "--cube", action="append", required=True, help="cube to write (repeatable)")
    p.add_argument("--role", default="user", choices=["user", "assistant", "system"], help="role of the TEXT messages")
    p.add_argument("--messages", metavar="FILE", help="JSON list of OpenAI-format messages ('-' reads stdin)")
    p.add_argument("--mode", default="fast", choices=["fast", "fine"])
    p.add_argument("--async", dest="async_", action="store_true", help="queue the work on the scheduler")
    p.add_argument("--session", default="", help="session id")
    p.add_argument("--tag", action="append", default=[], help="custom tag (repeatable)")
    p.set_defaults(func=cmd_add)

    p = command("search", "search one or more cubes")
    p.add_argument("query")
    p.add_argument("-c", "--cube", action="append", required=True, help="cube to read (repeatable)")
    p.add_argument("-k", "--top-k", type=_positive_int, default=10)
    p.add_argument("--filter", help='JSON filter, e.g. {"memory_type": "UserMemory"}')
    p.add_argument("--preferences", action="store_true", help="also search preference memories")
    p.add_argument("--session", default="", help="session id")
    p.set_defaults(func=cmd_search)

    p = command("chat", "ask a question answered with memories (streams the answer)")
    p.add_argument("query", help="the question ('-' reads stdin)")
    p.add_argument("-c", "--cube", action="append", default=[], help="cube to read (repeatable)")
    p.add_argument("-k", "--top-k", type=_positive_int, default=10)
    p.add_argument("--session", default="", help="session id")
    p.add_argument("--system-prompt", default="")
    p.add_argument("--save", action="store_true", help="add the question and answer to the cubes")
    p.add_argument("-v", "--verbose", action="store_true", help="status and references on stderr")
    p.set_defaults(func=cmd_chat)

    p = command("cubes", "create, share, list or delete cubes")
    cubes = p.add_subparsers(dest="cubes_command", metavar="ACTION", parser_class=_Parser)
    c = cubes.add_parser("list", help="cubes you own or were shared", parents=[common])
    c = cubes.add_parser("create", help="create a cube", parents=[common])
    c.add_argument("cube")
    c.add_argument("--name", default="", help="display name")
    c = cubes.add_parser("share", help="give another user access (or --role none to revoke)", parents=[common])
    c.add_argument("cube")
    c.add_argument("target_user")
    c.add_argument("--role", default="reader", choices=["reader", "writer", "none"])
    c = cubes.add_parser("delete", help="delete a cube and its memories", parents=[common])
    c.add_argument("cube")
    c.add_argument("--yes", action="store_true", help="confirm")
    p.set_defaults(func=cmd_cubes)

    p = command("import", "import a conversation file (JSONL of messages, or LoCoMo JSON) into a cube")
    p.add_argument("file")
    p.add_argument("-c", "--cube", required=True)
    p.add_argument("--format", default="auto", choices=FORMATS)
    p.add_argument("--batch", type=_positive_int, default=20, help="messages per request (default 20)")
    p.add_argument("--mode", default="fast", choices=["fast", "fine"])
    p.add_argument("--session", default="", help="session id for JSONL messages without one")
    p.add_argument("--tag", action="append", default=[], help="custom tag (repeatable)")
    p.add_argument("--progress", default="auto", choices=["auto", "always", "never"], help="progress bar on stderr")
    p.set_defaults(func=cmd_import)

    p = command("export", "write a cube's memories as JSONL")
    p.add_argument("cube")
    p.add_argument("-o", "--output", help="file to write (default stdout)")
    p.add_argument("--page-size", type=_positive_int, default=EXPORT_PAGE_SIZE)
    p.set_defaults(func=cmd_export)
    return parser


def _resolve_globals(args: argparse.Namespace) -> None:
    args.addr = getattr(args, "addr", None) or os.environ.get("MEMOS_GATEWAY_ADDR") or DEFAULT_ADDR
    user = getattr(args, "user", None) or os.environ.get("MEMOS_USER") or os.environ.get("USER")
    if not user:
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no user name anywhere: --user is then required
            user = ""
    args.user = user
    args.timeout = getattr(args, "timeout", None)
    args.json = bool(getattr(args, "json", False))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _resolve_globals(args)
    ctx = Context(args)
    from shared.errors import MemosError

    try:
        return args.func(ctx)
    except CliError as exc:
        warn(str(exc))
        return exc.code
    except MemosError as err:
        warn(describe_error(err, ctx.addr, ctx.timeout))
        return error_exit_code(err)
    except KeyboardInterrupt:
        warn("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (e.g. `memos export cube | head`): stop quietly
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - the CLI promises one line, never a traceback
        if os.environ.get("MEMOS_CLI_DEBUG"):
            raise
        warn(f"internal error: {type(exc).__name__}: {exc}")
        return EXIT_FAILURE
    finally:
        ctx.close()
