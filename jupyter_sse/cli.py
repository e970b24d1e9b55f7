"""`jupyter sse`: list, follow and cancel jobs from a terminal (installed as `jupyter-sse`).

Exit codes: 0 done (for `follow`: the job succeeded), 1 the job failed, 130 it was cancelled (or Ctrl-C),
3 it was lost, 2 usage or connection error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from typing import Any

import httpx
from tqdm import tqdm

from ._version import __version__
from .client import Client, ClientError, Event, find_server
from .protocol import MAX_PAGE_SIZE as _PAGE
from .protocol import TERMINAL_STATES

__all__ = ["main"]

_PROG = "jupyter-sse"
_EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 130, "lost": 3}
_EXIT_ERROR = 2
_EXIT_INTERRUPTED = 130
# How long `follow` tries a server that has never answered before it gives up (exit 2).
_GIVE_UP_AFTER = 20.0
# A running job's publisher reports within a fraction of a second of any progress, and renews its lease every
# 10 s when nothing moves. Past _QUIET without a report, no progress has reached the server: the rate shown
# decays; past _STALLED (two leases missed) its kernel is busy without letting the publisher run, or cut off.
_QUIET = 1.0
_STALLED = 25.0

_Command = Callable[[Client, argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse has printed what to say
        return exc.code if isinstance(exc.code, int) else _EXIT_ERROR
    serve: Callable[[argparse.Namespace], int] | None = getattr(args, "serve", None)
    if serve is not None:
        return serve(args)
    command: _Command | None = getattr(args, "run", None)
    if command is None:
        parser.print_usage(sys.stderr)
        return _EXIT_ERROR
    url = args.url
    try:
        server = find_server(args.url, args.token)
        url = server.url
        with Client(server.url, server.token) as client:
            return command(client, args)
    except KeyboardInterrupt:
        return _EXIT_INTERRUPTED
    except ClientError as exc:
        hint = " (give the server's token with --token, or set JUPYTER_TOKEN)" if exc.status == 403 else ""
        return _fail(f"{exc}{hint}")
    except httpx.HTTPError as exc:
        return _fail(f"cannot reach {url or 'the server'}: {str(exc) or type(exc).__name__}")
    except (ValueError, KeyError, TypeError) as exc:
        # A reply that is not the protocol's (not JSON, missing fields): not a server of this version.
        return _fail(f"unexpected reply from {url}: {exc!r}")
    except BrokenPipeError:
        # `jupyter sse follow --json | head -1`: the reader left. Keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _fail(message: str) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return _EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jupyter sse",
        description="Follow the jobs of a Jupyter server running jupyter-sse.",
        epilog="The server is found from --url/--token, then JUPYTER_SSE_URL (and JUPYTER_TOKEN), then the "
        "newest running Jupyter server.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_server_options(parser, default=None)
    # The same options after the subcommand too (`jupyter sse list --url ...`); SUPPRESS keeps a value given
    # before the subcommand from being reset.
    common = argparse.ArgumentParser(add_help=False)
    _add_server_options(common, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = commands.add_parser(
        "list",
        parents=[common],
        help="list jobs, newest first",
        description="List jobs, newest first. The RATE of a running job that has not reported progress for a "
        f"while decays (at most one more unit since its last report); after {_STALLED:g} s without any report "
        "it shows `stalled`.",
    )
    p.add_argument("--state", help="only jobs in this state (pending, running, succeeded, failed, ...)")
    p.add_argument("--json", action="store_true", help="print the jobs as JSON")
    p.add_argument(
        "--limit", type=_positive, default=_LIST_DEFAULT, help=f"show the N newest jobs (default: {_LIST_DEFAULT})"
    )
    p.add_argument("--all", action="store_true", help="show every job (read from the server page by page)")
    p.set_defaults(run=_list)

    p = commands.add_parser(
        "follow",
        parents=[common],
        help="follow a job until it ends",
        description="Follow a job until it ends; exit 0 if it succeeded, 1 failed, 130 cancelled, 3 lost, 2 on "
        "a usage or connection error. A server that has answered once is reconnected to for as long as it takes "
        "(resuming where the stream left off); one that never answers is given up on after --give-up-after "
        "seconds (exit 2).",
    )
    p.add_argument("job", nargs="?", help="the job's id (default: the newest running job, or the next one)")
    p.add_argument("--json", action="store_true", help="print each event as a JSON line instead of a bar")
    p.add_argument(
        "--give-up-after",
        type=_seconds,
        default=_GIVE_UP_AFTER,
        metavar="SECONDS",
        help=f"how long to try a server that has not answered yet, then exit 2 (default: {_GIVE_UP_AFTER:g})",
    )
    p.set_defaults(run=_follow)

    p = commands.add_parser("cancel", parents=[common], help="ask for a job's cancellation")
    p.add_argument("job", help="the job's id")
    p.set_defaults(run=_cancel)

    p = commands.add_parser("hub", help="serve a standalone hub (needs the asgi extra: jupyter-sse[asgi])")
    p.add_argument(
        "--host", help="the address to listen on (default: 127.0.0.1, or $JUPYTERHUB_SERVICE_URL's as a service)"
    )
    p.add_argument(
        "--port", type=int, help="the port to listen on (default: 8765, or $JUPYTERHUB_SERVICE_URL's as a service)"
    )
    p.add_argument(
        "--token",
        default=os.environ.get("JUPYTER_SSE_HUB_TOKEN"),
        help="a token whose holder is the hub's one user, an admin, as `Authorization: Bearer` (default: "
        "$JUPYTER_SSE_HUB_TOKEN)",
    )
    p.add_argument(
        "--users",
        metavar="FILE",
        help="the users file (see `jupyter sse users add`): each user sees and acts on their own jobs, admins on all",
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="serve with no authentication at all (loopback only): without it, the hub refuses to start with no "
        "users file, no token and no JupyterHub",
    )
    p.add_argument(
        "--notify-url",
        action="append",
        metavar="URL",
        help="an Apprise URL told when jobs end (repeatable; default: $APPRISE_URLS and Apprise's config files; "
        "needs jupyter-sse[notify])",
    )
    p.add_argument(
        "--notify-settings",
        metavar="FILE",
        help="keep here the notification targets and rules users set with PUT jupyter-sse/api/notify (users of "
        "the users file keep theirs there; with --store, Redis keeps them; default: in memory)",
    )
    p.add_argument(
        "--store",
        metavar="redis://HOST:PORT/DB",
        default=os.environ.get("JUPYTER_SSE_HUB_STORE"),
        help="keep the jobs in Redis: every hub started with the same URL serves the same jobs, so several can run "
        "behind a load balancer (default: $JUPYTER_SSE_HUB_STORE, or this process's memory; needs "
        "jupyter-sse[redis])",
    )
    p.add_argument(
        "--max-event-streams",
        type=int,
        default=0,
        metavar="N",
        help="event streams held at once; beyond it 503 with Retry-After (default 0: the open-file limit less a "
        "reserve)",
    )
    p.add_argument(
        "--max-event-streams-per-user",
        type=int,
        default=0,
        metavar="N",
        help="event streams one user may hold at once (default 0: as many as --max-event-streams)",
    )
    p.set_defaults(serve=_hub)

    p = commands.add_parser("users", help="manage the users file of a hub (`jupyter sse hub --users FILE`)")
    users = p.add_subparsers(title="users commands", metavar="COMMAND")
    file_option = argparse.ArgumentParser(add_help=False)
    file_option.add_argument("--file", required=True, metavar="FILE", help="the users file")
    q = users.add_parser(
        "add",
        parents=[file_option],
        help="add a user, or give one a new token; prints the token once",
        description="Add a user (or replace a user's token) and print the new token: the file keeps only a salted "
        "hash of it. A running hub reads the change at its next request.",
    )
    q.add_argument("name", help="the user's name (1 to 64 of [A-Za-z0-9._@-])")
    q.add_argument("--admin", action="store_true", help="an admin sees and acts on every user's jobs")
    q.set_defaults(serve=_users_add)
    q = users.add_parser("remove", parents=[file_option], help="remove a user: their token stops working")
    q.add_argument("name")
    q.set_defaults(serve=_users_remove)
    q = users.add_parser("list", parents=[file_option], help="list the users")
    q.set_defaults(serve=_users_list)
    q = users.add_parser(
        "notify",
        parents=[file_option],
        help="set where a user's jobs' ends are told, and when",
        description="Set a user's own notification targets (Apprise URLs) and rules; what is not given keeps its "
        "value, and what was never set is the hub's (--notify-url, APPRISE_URLS). With no URL and no option: show "
        "the user's settings. A running hub reads the change at its next job end.",
    )
    q.add_argument("name")
    q.add_argument("urls", nargs="*", metavar="URL", help="the user's Apprise URLs (they replace the ones set)")
    q.add_argument("--states", nargs="+", metavar="STATE", help="the end states told (succeeded failed cancelled lost)")
    q.add_argument("--min-duration", type=float, metavar="S", help="only jobs that ran at least S seconds")
    q.add_argument("--window", type=float, metavar="S", help="jobs ending within S seconds make one message")
    q.add_argument("--no-targets", action="store_true", help="tell this user nothing (a job's own notify= still works)")
    q.add_argument("--hub-targets", action="store_true", help="the hub's targets again instead of the user's")
    q.add_argument("--reset", action="store_true", help="forget all the user's settings: the hub's again")
    q.set_defaults(serve=_users_notify)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):  # also NaN
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def _add_server_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--url", default=default, help="the Jupyter server's base URL")
    parser.add_argument("--token", default=default, help="the Jupyter server's token")


# ---- list ----------------------------------------------------------------------------------------------


_LIST_DEFAULT = 100


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return int(text)


def _page_size(limit: int | None, have: int) -> int:
    return _PAGE if limit is None else min(_PAGE, limit - have)


def _list(client: Client, args: argparse.Namespace) -> int:
    limit: int | None = None if args.all else args.limit
    # Page by page: with a hundred thousand jobs kept, one reply with all of them would be tens of MB.
    first = client.page(state=args.state, limit=_page_size(limit, 0))
    jobs, total, cursor = list(first["jobs"]), int(first["total"]), first["next"]
    while cursor is not None and (limit is None or len(jobs) < limit):
        page = client.page(state=args.state, limit=_page_size(limit, len(jobs)), cursor=cursor)
        jobs.extend(page["jobs"])
        cursor = page["next"]
    if limit is not None:
        del jobs[limit:]  # a server from before pages sends them all
    if len(jobs) < total and not args.all:
        print(f"the {len(jobs)} newest of {total} jobs: --limit N or --all for more", file=sys.stderr)
    if args.json:
        print(json.dumps(jobs, indent=2))
    elif not jobs:
        print("no jobs", file=sys.stderr)
    else:
        print(_table(jobs, time.time()))
    return 0


def _table(jobs: list[dict[str, Any]], now: float) -> str:
    header = ("ID", "NAME", "STATE", "N/TOTAL", "ELAPSED", "RATE")
    rows = [header]
    for job in jobs:
        rows.append(
            (
                _printable(str(job["id"])),
                _shorten(_printable(str(job.get("name") or "")), 40),
                _printable(str(job["state"])),
                f"{_number(job.get('n', 0))}/{_number(job.get('total'))}",
                tqdm.format_interval(job.get("elapsed") or 0),
                _rate(job, now),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _rate(job: dict[str, Any], now: float) -> str:
    """The job's rate; for a running job, what it can still be given how long the server has not heard of it.

    `updated` is the server's clock and `now` this machine's: on one machine they agree; a clock ahead of the
    server's only makes a job look quiet sooner.
    """
    rate, unit = job.get("rate"), _printable(str(job.get("unit") or "it"))
    updated = job.get("updated")
    if job.get("state") == "running" and isinstance(updated, int | float):
        age = now - updated
        if age >= _STALLED:
            return f"stalled {tqdm.format_interval(age)}"
        if isinstance(rate, int | float) and rate > 0 and age > _QUIET:
            # No report for `quiet` seconds means no progress in that time: at most one more unit would be done
            # if it came now, so the rate over the last unit's time plus the silence is at most this.
            rate = 1.0 / (1.0 / rate + (age - _QUIET))
    if not isinstance(rate, int | float):
        return ""
    return f"{rate:.3g} {unit}/s"


def _printable(text: str) -> str:
    """`text` with control and other invisible characters escaped (`\\n`, `\\t`, `\\x1b`): a name must not
    break a table's line, move the cursor or recolour the terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _number(value: Any) -> str:
    if value is None:
        return "?"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# ---- follow --------------------------------------------------------------------------------------------


def _follow(client: Client, args: argparse.Namespace) -> int:
    job_id: str = args.job or _choose_job(client, args.give_up_after)
    events = client.follow(job_id, give_up_after=args.give_up_after)
    last = _print_json(events) if args.json else _draw_bar(events)
    if last is None or last.get("state") not in TERMINAL_STATES:
        return _fail(f"the stream of job {job_id} ended before the job did")
    state = str(last["state"])
    print(_summary(last), file=sys.stderr if args.json else sys.stdout)
    return _EXIT_CODES[state]


def _choose_job(client: Client, give_up_after: float) -> str:
    """The newest running job, or else the next job that starts."""
    running = client.list(state="running", limit=1)  # the newest is all it needs
    if running:
        job = running[0]
        print(f"following job {_label(job)}", file=sys.stderr)
        return str(job["id"])
    print("no job is running: waiting for the next one (Ctrl-C to stop)", file=sys.stderr)
    # A new connection opens with the snapshot of every known job: finished ones are history, skip them.
    with closing(client.follow(give_up_after=give_up_after)) as events:
        for event in events:
            if event.event == "job" and event.data.get("state") not in TERMINAL_STATES:
                print(f"following job {_label(event.data)}", file=sys.stderr)
                return str(event.data["id"])
    raise AssertionError("the stream of every job does not end")  # pragma: no cover


def _print_json(events: Iterator[Event]) -> dict[str, Any] | None:
    last = None
    for event in events:
        if event.event == "job":
            last = event.data
        elif event.event == "reset":
            last = None  # what came before is the old history's: the job's state comes again, or never
        print(json.dumps({"event": event.event, "id": event.id, "data": event.data}), flush=True)
    return last


def _draw_bar(events: Iterator[Event]) -> dict[str, Any] | None:
    last = None
    bar: _JobBar | None = None  # made at the first state, so that an error on connect leaves no empty bar behind
    try:
        with _reconnects_above():
            for event in events:
                if event.event == "job":
                    last = event.data
                    if bar is None:  # not `bar or ...`: a tqdm's truth is its total's
                        bar = _new_bar(event.data)
                    _update(bar, event.data)
                elif event.event == "reset":
                    # The server lost the history we resumed from (a restart with a memory store): its state of
                    # the job comes next, if it still has the job; a stale one must not pass for the end.
                    last = None
                    tqdm.write("[the server restarted without its history: reading the job's state again]")
                elif event.event == "log":
                    if event.data.get("dropped"):
                        tqdm.write("[earlier log lines were dropped]")
                    for line in event.data.get("lines", ()):
                        tqdm.write(str(line))
    finally:
        if bar is not None:
            bar.close()
    return last


class _JobBar(tqdm):  # type: ignore[misc]  # tqdm has no type hints
    """A bar that shows the job's own elapsed time and rate, as its publisher measured them.

    tqdm would measure from when this bar was made and average over that, which is wrong for a job that
    ran for an hour before we attached, or that we see only in jumps.
    """

    job_elapsed = 0.0
    job_rate: float | None = None

    @property
    def format_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = super().format_dict
        # With no rate and no elapsed time, tqdm shows `?it/s` instead of inventing one.
        values.update(elapsed=self.job_elapsed, rate=self.job_rate)
        return values


def _new_bar(job: dict[str, Any]) -> _JobBar:
    # Made with the job's own total and name, so that its first drawing is not an empty `0it`.
    desc, unit = _printable(str(job.get("name") or job["id"])), _printable(str(job.get("unit") or "it"))
    return _JobBar(total=job.get("total"), desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)


def _update(bar: _JobBar, job: dict[str, Any]) -> None:
    bar.total = job.get("total")
    bar.n = job.get("n", 0)
    bar.unit = _printable(str(job.get("unit") or "it"))
    bar.job_elapsed = float(job.get("elapsed") or 0)
    bar.job_rate = job.get("rate")
    bar.set_description(_printable(str(job.get("name") or job["id"])), refresh=False)
    bar.set_postfix_str(_printable(str(job.get("message") or "")), refresh=False)
    bar.refresh()


@contextmanager
def _reconnects_above() -> Iterator[None]:
    """Show the client's reconnect messages above the bar, while it is drawn."""

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            tqdm.write(f"[{record.getMessage()}]", file=sys.stderr)

    logger = logging.getLogger("jupyter_sse.client")
    handler, level = Handler(logging.INFO), logger.level
    logger.addHandler(handler)
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _summary(job: dict[str, Any]) -> str:
    text = f"job {_label(job)} {_printable(str(job['state']))}: "
    text += f"{_number(job.get('n', 0))}/{_number(job.get('total'))} {_printable(str(job.get('unit') or 'it'))} "
    text += f"in {tqdm.format_interval(job.get('elapsed') or 0)}"
    error = job.get("error")
    if isinstance(error, dict):
        # The message may span lines (a traceback's last line, a multi-line ValueError): only its kind is escaped.
        text += f": {_printable(str(error.get('type', 'Error')))}: {error.get('message', '')}"
    return text


def _label(job: dict[str, Any]) -> str:
    job_id = _printable(str(job["id"]))
    return f"{job_id} ({_printable(str(job['name']))})" if job.get("name") else job_id


# ---- hub -----------------------------------------------------------------------------------------------


def _hub(args: argparse.Namespace) -> int:
    try:  # only here: the rest of the CLI, and the server extension, do without FastAPI and uvicorn
        from .core import ProtocolError
        from .hub import HubConfigError, run
        from .hub._jupyterhub import bind_from_environment, from_environment
    except ImportError as exc:
        return _fail(f"the hub needs the asgi extra: pip install 'jupyter-sse[asgi]' ({exc})")
    try:
        options: dict[str, Any] = {
            "notify_urls": args.notify_url,
            "max_event_streams": args.max_event_streams,
            "max_event_streams_per_user": args.max_event_streams_per_user,
        }
        if args.store:
            options["store"] = args.store
        if args.users:
            options["users"] = args.users
        if args.notify_settings:
            options["notify_settings"] = args.notify_settings
        service = from_environment()  # run by JupyterHub as a service: its environment says so
        if service is not None:
            options["jupyterhub"] = service
            bind = bind_from_environment()
            if bind is not None:
                args.host = bind[0] if args.host is None else args.host
                args.port = bind[1] if args.port is None else args.port
        args.host = "127.0.0.1" if args.host is None else args.host
        args.port = 8765 if args.port is None else args.port
        run(args.host, args.port, args.token or None, no_auth=args.no_auth, **options)
    except (HubConfigError, ValueError) as exc:
        return _fail(str(exc))
    except ProtocolError as exc:  # the store cannot be reached
        return _fail(f"cannot start the hub: {exc.detail}")
    except OSError as exc:  # the port is taken, the address is not ours
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc}")
    except ImportError as exc:  # run as a JupyterHub service without jupyterhub installed
        return _fail(f"a hub run as a JupyterHub service needs jupyterhub installed ({exc})")
    except KeyboardInterrupt:
        pass
    return 0


# ---- users ---------------------------------------------------------------------------------------------


def _users_add(args: argparse.Namespace) -> int:
    from .hub._users import UsersFile, UsersFileError

    try:
        token = UsersFile(args.file).add(args.name, admin=args.admin)
    except UsersFileError as exc:
        return _fail(str(exc))
    print(token)
    print(
        f"user {args.name}{' (admin)' if args.admin else ''} added to {args.file}: the token above is shown once; "
        "publishers take it as JUPYTER_SSE_TOKEN",
        file=sys.stderr,
    )
    return 0


def _users_remove(args: argparse.Namespace) -> int:
    from .hub._users import UsersFile, UsersFileError

    try:
        UsersFile(args.file).remove(args.name)
    except UsersFileError as exc:
        return _fail(str(exc))
    return 0


def _users_list(args: argparse.Namespace) -> int:
    from .hub._users import UsersFile, UsersFileError

    try:
        for user in UsersFile(args.file).users():
            print(f"{user.name}{'  admin' if user.admin else ''}")
    except UsersFileError as exc:
        return _fail(str(exc))
    return 0


def _users_notify(args: argparse.Namespace) -> int:
    from .hub._notify_prefs import UserNotify, check_urls
    from .hub._users import UsersFile, UsersFileError

    users = UsersFile(args.file)
    try:
        if not users.has(args.name):
            return _fail(f"no user {args.name!r} in {args.file}")
        if args.urls and (args.no_targets or args.hub_targets):
            return _fail("give URLs, or --no-targets, or --hub-targets: one of them")
        settings: dict[str, Any] = {} if args.reset else dict(users.notify_settings(args.name) or {})
        given = {"states": args.states, "min_duration": args.min_duration, "window": args.window}
        if args.urls or args.no_targets:
            given["urls"] = args.urls
        if args.hub_targets:
            settings.pop("urls", None)
        if args.reset or args.hub_targets or any(value is not None for value in given.values()):
            settings.update({key: value for key, value in given.items() if value is not None})
            prefs = UserNotify.from_json(settings)  # nothing is written unless all of it is valid
            if prefs.urls:
                check_urls(prefs.urls)
            users.set_notify_settings(args.name, prefs.to_json() or None)
    except (UsersFileError, ValueError, RuntimeError) as exc:
        return _fail(str(exc))
    shown = users.notify_settings(args.name)
    print(json.dumps({"user": args.name, "notify": shown or {}}, indent=2))
    return 0


# ---- cancel --------------------------------------------------------------------------------------------


def _cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel(args.job)
    pending = " (cancel requested)" if job.get("cancel_requested") else ""
    print(f"job {_label(job)} {job['state']}{pending}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
