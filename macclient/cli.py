"""
`macctl`: the session attachments API from a terminal or a CI job.

Exit codes: 0 success, 1 the server answered with an error (its detail and
code are printed), 2 bad usage, 3 the server could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .api import ApiError, Client, ConnectionLost, EventFilters

EXIT_API_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
out = Console()
err = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data))


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _filters(args: argparse.Namespace) -> EventFilters:
    return EventFilters(
        include_mime=args.include_mime or [],
        include_ext=args.include_ext or [],
        max_size=args.max_size,
    )


def cmd_session(client: Client, args: argparse.Namespace) -> int:
    if args.action == "create":
        _print_json(client.create_session(args.session_id))
    elif args.action == "show":
        _print_json(client.get_session(args.session_id))
    elif args.action == "delete":
        client.delete_session(args.session_id)
        err.print(f"Session {args.session_id} purged.")
    return 0


def cmd_upload(client: Client, args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        err.print(f"[red]Not a file:[/red] {', '.join(missing)}")
        return EXIT_USAGE
    results = []
    with _progress() as progress:
        for path in paths:
            task = progress.add_task(path.name, total=path.stat().st_size)
            advance = lambda n, t=task: progress.advance(t, n)  # noqa: E731
            if args.resume:

                def waiting(seconds: float, name: str = path.name) -> None:
                    progress.console.print(
                        f"{name}: another request holds this upload (one cut off by a "
                        f"server that stopped holds it until its lease lapses); "
                        f"retrying in {seconds:.0f} s"
                    )

                results.append(
                    client.upload_resumable(args.session_id, path, advance, on_wait=waiting)
                )
            else:
                results.append(client.upload(args.session_id, path, advance))
    _print_json(results if len(results) > 1 else results[0])
    return 0


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    _print_json(client.list_uploads(args.session_id))
    return 0


def cmd_workflows(client: Client, args: argparse.Namespace) -> int:
    workflows = client.workflows()
    if args.json:
        _print_json(workflows)
        return 0
    for workflow in workflows:
        out.print(f"[bold]{workflow['name']}[/bold]  {workflow['description']}", highlight=False)
    return 0


def cmd_execute(client: Client, args: argparse.Namespace) -> int:
    variables = {}
    for pair in args.var or []:
        key, sep, value = pair.partition("=")
        if not sep:
            err.print(f"[red]--var takes KEY=VALUE, not {pair!r}[/red]")
            return EXIT_USAGE
        variables[key] = value
    _print_json(client.execute(args.workflow, args.prompt, args.session_id, args.attach, variables))
    return 0


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    filters = _filters(args)
    if args.follow:
        seen = 0
        for event in client.follow(args.session_id, args.after, filters):
            out.print(json.dumps(event), soft_wrap=True)
            seen += 1
            if args.count is not None and seen >= args.count:
                break
        return 0
    _print_json(client.events(args.session_id, args.after, 0, filters, args.limit))
    return 0


def _download_progress(progress: Progress, name: str):
    task = progress.add_task(name, total=None)

    def advance(n: int, total: int | None) -> None:
        if total is not None and progress.tasks[task].total is None:
            progress.update(task, total=total)
        progress.advance(task, n)

    return advance


def cmd_fetch(client: Client, args: argparse.Namespace) -> int:
    destination = Path(args.output) if args.output else None
    if destination is None:
        meta = client.artifact_meta(args.session_id, args.artifact_id)
        destination = Path(Path(str(meta.get("name") or args.artifact_id)).name or args.artifact_id)
    with _progress() as progress:
        client.fetch_artifact(
            args.session_id,
            args.artifact_id,
            destination,
            _download_progress(progress, destination.name),
        )
    err.print(f"Saved {destination}")
    return 0


def cmd_download(client: Client, args: argparse.Namespace) -> int:
    destination = Path(args.output or f"session_{args.session_id}.zip")
    with _progress() as progress:
        client.download_zip(
            args.session_id,
            destination,
            _filters(args),
            args.after,
            _download_progress(progress, destination.name),
        )
    err.print(f"Saved {destination}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="macctl", description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--server", help="Base URL (env MAC_SERVER, default http://127.0.0.1:8000)."
    )
    parser.add_argument("--token", help="Access token (env MAC_TOKEN).")
    commands = parser.add_subparsers(dest="command", required=True)

    session = commands.add_parser("session", help="Create, show or purge a session.")
    session.add_argument("action", choices=["create", "show", "delete"])
    session.add_argument(
        "session_id", nargs="?", help="Required for show and delete; optional for create."
    )
    session.set_defaults(handler=cmd_session)

    upload = commands.add_parser("upload", help="Upload files into a session, with progress bars.")
    upload.add_argument("session_id")
    upload.add_argument("files", nargs="+")
    upload.add_argument(
        "--resume",
        action="store_true",
        help="Upload with the tus protocol in 8 MiB chunks; after an interruption, the same "
        "command continues where the server's offset says.",
    )
    upload.set_defaults(handler=cmd_upload)

    listing = commands.add_parser("list", help="List a session's attachments.")
    listing.add_argument("session_id")
    listing.set_defaults(handler=cmd_list)

    workflows = commands.add_parser("workflows", help="List the workflows that can be run.")
    workflows.add_argument("--json", action="store_true", help="Print them as JSON, with nodes.")
    workflows.set_defaults(handler=cmd_workflows)

    execute = commands.add_parser("execute", help="Start a workflow run.")
    execute.add_argument("workflow")
    execute.add_argument("--prompt", required=True, help="The task prompt (required, non-blank).")
    execute.add_argument("--session", dest="session_id")
    execute.add_argument("--attach", action="append", metavar="ATTACHMENT_ID")
    execute.add_argument("--var", action="append", metavar="KEY=VALUE")
    execute.set_defaults(handler=cmd_execute)

    def add_filters(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--include-mime", type=_csv, help="Comma list; 'image/' matches a prefix.")
        sub.add_argument("--include-ext", type=_csv, help="Comma list, with or without dots.")
        sub.add_argument("--max-size", type=int)
        sub.add_argument("--after", type=int, help="Cursor: only what came after it.")

    events = commands.add_parser("events", help="A page of events, or follow them with --follow.")
    events.add_argument("session_id")
    events.add_argument("--follow", action="store_true", help="Keep listening (long-polls).")
    events.add_argument(
        "--count", type=int, help="With --follow, stop after this many events (for scripts)."
    )
    events.add_argument("--limit", type=int)
    add_filters(events)
    events.set_defaults(handler=cmd_events)

    fetch = commands.add_parser("fetch", help="Download one artifact or attachment.")
    fetch.add_argument("session_id")
    fetch.add_argument("artifact_id")
    fetch.add_argument("-o", "--output")
    fetch.set_defaults(handler=cmd_fetch)

    download = commands.add_parser("download", help="Download the session as a zip.")
    download.add_argument("session_id")
    download.add_argument("-o", "--output")
    add_filters(download)
    download.set_defaults(handler=cmd_download)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "session" and args.action in {"show", "delete"} and not args.session_id:
        parser.error(f"session {args.action} needs a session id")
    client = Client.from_env(args.server, args.token)
    try:
        return int(args.handler(client, args))
    except ApiError as exc:
        err.print(f"[red]Error {exc.status} ({exc.code}):[/red] {exc.detail}")
        return EXIT_API_ERROR
    except httpx.TransportError as exc:
        err.print(f"[red]Cannot reach {client.http.base_url}:[/red] {exc}")
        return EXIT_UNREACHABLE
    except ConnectionLost as exc:
        err.print(
            f"[red]Lost the connection to {client.http.base_url}:[/red] {exc}\n"
            "Run the same command again: the upload resumes from what the server kept."
        )
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
