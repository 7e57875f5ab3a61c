"""Keep TensorFlow's start-up messages out of the command line's output.

Every process that imports TensorFlow prints, from C++, lines such as::

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1796207347.503843    7374 port.cc:153] oneDNN custom operations are on. ...
    I0000 00:00:1796207430.474334    8473 cpu_feature_guard.cc:227] This TensorFlow binary is ...

plus "could not find cuda drivers" lines from a GPU build on a machine
without one.  Those logged before absl is initialised ignore
``TF_CPP_MIN_LOG_LEVEL``, and a local cluster's workers print them too, into
the middle of the progress bars (six copies for one ``denoise`` on two
workers).  The workers of a local cluster write to the command's own file
descriptor 2, so one filter on it, in the command's process, covers all of
them: :func:`quiet_native_logs` points descriptor 2 at a pipe and forwards
everything except those lines.  ``survey-denoise --verbose`` leaves it off.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
import threading
from collections.abc import Iterator

_GPU = rb".*(?i:cuda|cudnn|cufft|cublas|cusolver|tensorrt|TF-TRT).*"
# Whole lines (up to the newline) that are start-up noise.  Informational and
# warning lines of TensorFlow's C++ log formats go; errors only when they are
# about the GPU libraries a CPU machine lacks.
NOISE = re.compile(
    rb"(?:WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\] .*"
    rb"|[EF]\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\] " + _GPU +
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] [\w./-]+:\d+\] .*"
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [EF] [\w./-]+:\d+\] " + _GPU +
    rb"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\."
    rb")\r?$")

_IDLE = 0.05  # s without new bytes after which a line without newline (a bar) is shown


def strip_noise(line: bytes) -> bytes | None:
    """One line without its newline -> what to show (None: nothing, not even the newline).

    A message written while a progress bar was drawn follows the bar on the
    same line; the bar is kept and the message dropped.
    """
    match = NOISE.search(line)
    if match is None:
        return line + b"\n"
    kept = line[:match.start()]
    return kept or None


def _pump(read_fd: int, out_fd: int, stop: threading.Event) -> None:
    pending = b""

    def write(data: bytes) -> None:
        try:
            os.write(out_fd, data)
        except OSError:  # the terminal or the reader of our stderr is gone
            pass

    while True:
        # Read before select: the command writes its last lines, then sets
        # stop.  Bytes that arrive between an empty select and a look at stop
        # would otherwise be left in the pipe; a stop seen here means every
        # byte written before it is already in the pipe for this select.
        stopping = stop.is_set()
        ready, _, _ = select.select([read_fd], [], [], 0 if stopping else _IDLE)
        if not ready:
            if pending:  # a bar being redrawn, or a prompt: not a log line
                write(pending)
                pending = b""
            if stopping:
                break
            continue
        chunk = os.read(read_fd, 1 << 16)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        shown = [s for s in map(strip_noise, lines) if s is not None]
        if shown:
            write(b"".join(shown))
    if pending:
        write(strip_noise(pending) or b"")


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[bool]:
    """Drop TensorFlow's start-up lines from file descriptor 2 while the block runs.

    Yields True when the filter is in place; False where ``sys.stderr`` is
    not descriptor 2 (captured by a test harness, a notebook), which is then
    left alone.  Child processes started inside the block (a local
    cluster's workers) inherit the filtered descriptor.
    """
    try:
        # select() on pipes is POSIX-only.
        real = os.name == "posix" and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        real = False
    if not real:
        yield False
        return
    sys.stderr.flush()
    original = os.dup(2)
    if os.isatty(original) and "TQDM_NCOLS" not in os.environ:
        # Progress bars size themselves from descriptor 2, which is now a pipe.
        with contextlib.suppress(OSError):
            columns = os.get_terminal_size(original).columns
            if columns > 1:
                os.environ["TQDM_NCOLS"] = str(columns - 1)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    stop = threading.Event()
    pump = threading.Thread(target=_pump, args=(read_fd, original, stop), daemon=True,
                            name="survey-denoise-stderr")
    pump.start()
    try:
        yield True
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)
        stop.set()
        # Processes still holding the pipe (a multiprocessing resource
        # tracker) would keep it open forever: stop once it has been idle.
        pump.join(timeout=5)
        if not pump.is_alive():
            os.close(read_fd)
            os.close(original)
