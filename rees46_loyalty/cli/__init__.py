"""The command line: ``python -m rees46_loyalty demo | serve-fake | details | history | …``.

The SDK's programs, kept out of the SDK itself: ``demo`` (``_demo.py``) and ``serve-fake`` are
for developers; ``details``, ``history``, ``cancel``, ``change`` and ``reconcile`` are for
shop support staff: their arguments are in ``_args.py``, they run in ``_operator.py`` and print
through ``_render.py``. ``rees46_loyalty/__main__.py`` only calls :func:`main`.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import signal
import sys
import textwrap
from collections.abc import Sequence
from typing import Any, TextIO

from ._args import COMMANDS, EXIT_CODES_HELP, add_commands

__all__ = ["main", "main_async"]

#: The fake server's own secret: printing it is harmless, a secret passed in is never printed.
_DEFAULT_SECRET = "test-secret"  # noqa: S105 - the fake server's, not a real one


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rees46_loyalty",
        description=textwrap.fill(
            "The REES46 loyalty checkout SDK: a demo, a fake API server, and commands for "
            "shop support staff (details, history, cancel, change, reconcile). Run a command "
            "with --help for its arguments and examples.",
            width=88,
        ),
        epilog=f"operator commands ({', '.join(sorted(COMMANDS))}):\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "demo",
        help="run a whole order life cycle against the embedded fake API, with faults on",
        description="Run estimate, apply, confirm, change, reconcile, cancel against the embedded "
        "fake server with a fault planned for each step, then check the server's ledger. "
        "Exit code 0 when every check holds.",
    )
    serve = commands.add_parser(
        "serve-fake",
        help="serve the fake REES46 API on loopback until Ctrl-C",
        description="Serve the fake REES46 checkout API on 127.0.0.1 with sample members, "
        "products, promo codes (WELCOME10, AUTUMN5) and a certificate (GIFT-500).",
    )
    serve.add_argument("--port", type=int, default=8046, help="port (default 8046; 0 = any)")
    serve.add_argument("--shop-id", default="test-shop", help="shop id (default test-shop)")
    serve.add_argument(
        "--shop-secret", default=_DEFAULT_SECRET, help=f"shop secret (default {_DEFAULT_SECRET})"
    )
    serve.add_argument(
        "--envelope",
        choices=["status", "success"],
        default="status",
        help='answer envelope: {"status": ...} (current docs, default) or {"success": ...}',
    )
    serve.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="share of requests (0 to 1) that meet a random fault (default 0)",
    )
    serve.add_argument("--seed", type=int, default=0, help="seed of the random faults")
    add_commands(commands)
    return parser


async def _serve(args: argparse.Namespace, out: TextIO) -> None:
    from ..testing import FakeRees46  # noqa: PLC0415 - aiohttp.web only when serving
    from ..testing._seed import seed  # noqa: PLC0415

    fake = FakeRees46(
        shop_id=args.shop_id,
        shop_secret=args.shop_secret,
        envelope=args.envelope,
        port=args.port,
    )
    seed(fake)
    if args.fault_rate:
        fake.faults.random(args.fault_rate, seed=args.seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with fake:
        out.write(f"fake REES46 API at {fake.url}\n")
        secret = "the default, test-secret" if args.shop_secret == _DEFAULT_SECRET else "as given"
        out.write(f"shop_id: {fake.shop_id} (shop_secret: {secret})\n")
        out.write(f"envelope: {fake.envelope}, fault rate: {args.fault_rate:g}\n")
        for member in fake.members.values():
            out.write(f"member {member.identifier}: {member.bonuses} bonuses\n")
        out.write("Ctrl-C to stop\n")
        out.flush()
        await stop.wait()
    out.write(f"stopped after {len(fake.ledger.requests)} requests\n")


def main(
    argv: Sequence[str] | None = None,
    out: TextIO | None = None,
    *,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run the command line, writing to *out* (standard output); returns the exit code.

    *err* and *stdin* default to the process's own; the operator commands write errors and
    their question to *err* and read the answer from *stdin*.
    """
    out = sys.stdout if out is None else out
    args = _parser().parse_args(argv)
    if args.command in COMMANDS:
        from ._operator import run_in_new_loop  # noqa: PLC0415 - the client only when asked

        return run_in_new_loop(
            args,
            stdout=out,
            stderr=sys.stderr if err is None else err,
            stdin=sys.stdin if stdin is None else stdin,
        )
    if args.command == "demo":
        from ._demo import main as demo  # noqa: PLC0415 - the fake server only when asked

        return demo(out)
    try:
        asyncio.run(_serve(args, out))
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        (sys.stderr if err is None else err).write(
            f"serve-fake: port {args.port} is already in use (a serve-fake still running?); "
            "stop it, or pick another port with --port N (--port 0: any free port)\n"
        )
        return 2
    return 0


async def main_async(
    argv: Sequence[str],
    *,
    stdout: TextIO,
    stderr: TextIO,
    stdin: TextIO,
    client_options: dict[str, Any] | None = None,
) -> int:
    """Run an operator command inside a running event loop; returns the exit code.

    For embedding and tests: *client_options* go to ``LoyaltyClient.from_env`` (a fake clock,
    say). ``demo`` and ``serve-fake`` run their own loop and are refused here.
    """
    from ._operator import run  # noqa: PLC0415 - the client only when asked

    args = _parser().parse_args(argv)
    if args.command not in COMMANDS:
        raise ValueError(f"{args.command} runs its own event loop: call main() instead")
    return await run(args, stdout=stdout, stderr=stderr, stdin=stdin, client_options=client_options)
