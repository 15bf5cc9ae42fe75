"""Keep the shop secret and members' phones out of the local variables of tracebacks.

Error trackers record the local variables of every frame of an exception's traceback, along
its whole ``__cause__`` / ``__context__`` chain (Sentry's ``include_local_variables`` is on by
default), and so does ``traceback.TracebackException(capture_locals=True)``. The frames of a
failed call hold what the call was made of: the member's phone among the arguments, the
request's body and the URL with its query (the secret) inside aiohttp, the decoded answer.

So each public method of the client is :func:`scrubbed` (and each constructor
:func:`scrubbed_init`): when an exception leaves it, the frames it passed through below the
method are cleared (they have all finished; their file names and line numbers stay, their local
variables go) and the exceptions chained to it lose their tracebacks (they may come from other
tasks, whose frames are left alone). The exception's own type, message and attributes are
untouched.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeVar

__all__ = ["chained", "forget_locals", "scrubbed", "scrubbed_init", "strip_tracebacks"]

P = ParamSpec("P")
R = TypeVar("R")


def chained(error: BaseException) -> Iterator[BaseException]:
    """*error* and every exception chained to it (causes, contexts, groups' members), once each."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        pending.extend(getattr(current, "exceptions", ()))


def strip_tracebacks(error: BaseException, *, keep_own: bool = False) -> None:
    """Drop the tracebacks of *error*'s causes and contexts (and of *error* unless *keep_own*).

    Exception groups' members are walked too.
    """
    for current in chained(error):
        if current is not error or not keep_own:
            current.__traceback__ = None


def forget_locals(error: BaseException) -> None:
    """Clear the frames below the current one in *error*'s traceback; strip its chain's.

    Call it where *error* is caught: every frame after the first of its traceback has finished
    (the exception left it), so clearing one frees its local variables and nothing else.
    """
    traceback_ = error.__traceback__
    if traceback_ is not None and traceback_.tb_next is not None:
        traceback.clear_frames(traceback_.tb_next)
    strip_tracebacks(error, keep_own=True)


def scrubbed(method: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """*method*, whose exceptions leave with no local variable of the call below it."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except BaseException as error:
            del args, kwargs  # the member's phone may be among them; this frame stays
            forget_locals(error)
            raise

    return call


def scrubbed_init(method: Callable[P, None]) -> Callable[P, None]:
    """*method* (a constructor), whose exceptions leave with no local variable of the call.

    A wrong option makes ``__init__`` raise while its frame holds the shop secret among its
    arguments; the frames below this wrapper are cleared as :func:`scrubbed` clears them.
    """

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            method(*args, **kwargs)
        except BaseException as error:
            del args, kwargs  # the secret is among them; this frame stays
            forget_locals(error)
            raise

    return call
