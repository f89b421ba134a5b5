"""The first Ctrl-C or SIGTERM ends any dlcli command within about a second, whatever it is doing.

SIGINT raises KeyboardInterrupt and SIGTERM raises Terminated (a KeyboardInterrupt), so each
command's usual way out runs: one line, an exit code of 128 + the signal's number. That way out
can itself be held up: Python runs signal handlers in the main thread only, between bytecodes,
so a main thread inside a long C call (a tensor operation, a read from a hung mount) hears of
the signal late, and at exit the interpreter joins every non-daemon thread, however stuck (a
ThreadPoolExecutor's worker blocked in a read). A watchdog thread therefore hears every signal
through the wakeup fd, which the C-level handler writes at once from any thread, and ends the
process itself if it is still there GRACE seconds later.

Training stops gracefully instead, at the next step boundary with last.pt saved: inside
`graceful()` the first signal is left to the trainer, the second (or the end of the graceful
part) starts the watchdog's clock.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import select
import signal
import sys
import threading
import time

GRACE = 1.0  # seconds from the signal to the forced exit
STOPS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken the way Ctrl-C is."""

    signum = signal.SIGTERM


def signum_of(exc: KeyboardInterrupt) -> int:
    return getattr(exc, "signum", signal.SIGINT)


def exit_code(exc: KeyboardInterrupt) -> int:
    return 128 + signum_of(exc)


class _State:
    lock = threading.Lock()
    read_fd: int | None = None
    write_fd: int = -1
    thread: threading.Thread | None = None
    graceful = 0  # depth of graceful() sections
    repeated = False  # in them, every signal is a copy of the first
    spared = False  # a graceful section has let one signal through to the code
    deadline: float | None = None
    signum = signal.SIGINT
    said = False  # the interruption line was printed


def _terminate(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def guard():
    """While inside (in the main thread): SIGTERM raises Terminated, and a watchdog ends the process
    GRACE seconds after a stop signal if it has not ended by then. Elsewhere: nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _start_watchdog()
    previous_term = signal.getsignal(signal.SIGTERM)
    if previous_term in (signal.SIG_DFL, None):  # the default would end the process without a word
        signal.signal(signal.SIGTERM, _terminate)
    previous_fd = signal.set_wakeup_fd(_State.write_fd, warn_on_full_buffer=False)
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        if signal.getsignal(signal.SIGTERM) is _terminate:
            signal.signal(signal.SIGTERM, previous_term)


@contextlib.contextmanager
def graceful(repeated: bool = False):
    """A part that stops on its own at the first signal (training, at a step boundary): the watchdog
    waits for a second signal, or for the end of this part, before it starts counting. `repeated`:
    every signal is the first one's copy (the processes of a multi-process run get each twice,
    from the terminal and from their launcher), so only the end of this part starts the count."""
    with _State.lock:
        _State.graceful += 1
        outer, _State.repeated = _State.repeated, _State.repeated or repeated
    try:
        yield
    finally:
        with _State.lock:
            _State.graceful -= 1
            _State.repeated = outer
            if _State.spared and _State.graceful == 0:
                _State.spared = False
                _arm(_State.signum)


def interrupted_line(signum: int = signal.SIGINT) -> str:
    """The line an interrupted command prints; said() once printed."""
    return "dlcli: interrupted" + (f" ({signal.Signals(signum).name})" if signum != signal.SIGINT else "")


def said() -> None:
    """The command has printed why it ends: the watchdog, if it has to end it, adds no line of its own."""
    _State.said = True


def heard() -> bool:
    """Whether a stop signal has reached this process since guard() began."""
    if _State.deadline is not None or _State.spared:
        return True
    return _State.read_fd is not None and bool(select.select([_State.read_fd], [], [], 0)[0])  # not yet read


def exit_now(code: int) -> None:
    """End an interrupted process once its way out has run: log files closed and atexit callbacks
    run (the watchdog still counting), without the interpreter's teardown, which with torch loaded
    can take seconds, nor the join of threads that may be stuck."""
    logging.shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _arm(signum: int) -> None:
    if _State.deadline is None:
        _State.signum, _State.deadline = signum, time.monotonic() + GRACE
        if threading.current_thread() is not _State.thread:
            with contextlib.suppress(OSError):
                os.write(_State.write_fd, b"\0")  # wake the watchdog to count down


def _start_watchdog() -> None:
    with _State.lock:
        if _State.thread is not None:
            return
        _State.read_fd, _State.write_fd = os.pipe()
        os.set_blocking(_State.write_fd, False)  # the C handler must never wait on a full pipe
        os.set_inheritable(_State.read_fd, False)
        os.set_inheritable(_State.write_fd, False)
        _State.thread = threading.Thread(target=_watch, name="dlcli-interrupt-watchdog", daemon=True)
        _State.thread.start()


def _watch() -> None:
    # this thread takes no signals itself: they stay with the main thread (and with torch's
    # launcher, which blocks SIGINT there on purpose)
    signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals))
    while True:
        timeout = None if _State.deadline is None else max(0.0, _State.deadline - time.monotonic())
        ready, _, _ = select.select([_State.read_fd], [], [], timeout)
        if ready:
            for signum in os.read(_State.read_fd, 64):
                if signum not in STOPS:
                    continue
                with _State.lock:
                    if _State.graceful and (not _State.spared or _State.repeated):
                        _State.spared, _State.signum = True, _State.signum if _State.spared else signum
                    else:
                        _arm(signum)
        elif _State.deadline is not None and time.monotonic() >= _State.deadline:
            _force_exit()


def _force_exit() -> None:
    try:
        if not _State.said:
            print(interrupted_line(_State.signum), file=sys.stderr, flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(128 + _State.signum)
