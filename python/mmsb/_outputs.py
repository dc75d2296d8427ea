"""What the command line writes: the files a command writes at its end (`mmsb validate --json`,
`mmsb bench --json`) and its standard output.

A file is checked before the long work, so that a path that cannot be written fails at once, not
after minutes of validation or benchmarks; it is written whole or not at all (a temporary file
renamed over it), so that a full disk, a file size limit or Ctrl-C never leaves a half report or
clobbers the previous one; and nothing the command made for it is left behind when the work
never finished. A pipe or device (`--json /dev/stdout`, a FIFO) is written in place instead.

Standard output is guarded so that a reader that goes away (`mmsb inspect ... | head`) or a full
disk (`> /dev/full`) is one error the command can answer in one line (StdoutLost), not a
traceback from wherever the print happened to be.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import sys
import tempfile
from typing import Any, Iterator, Optional, TextIO


def make_folders(folder: str) -> list[str]:
    """Makes `folder` and its missing parents; returns those it made, outermost first. A part of
    the path that is a file raises NotADirectoryError (os.makedirs says "File exists"); any
    failure removes the folders it made before it is raised."""
    folder = os.path.abspath(folder)
    missing = []
    parent = folder
    while not os.path.exists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), parent)
    made: list[str] = []
    try:
        for path in reversed(missing):
            os.mkdir(path)
            made.append(path)
    except OSError:
        remove_empty_folders(made)  # none of it half-made
        raise
    return made


def remove_empty_folders(folders: list[str]) -> None:
    """Removes those of `folders` (outermost first, as make_folders gives them) that are empty."""
    for path in reversed(folders):
        try:
            os.rmdir(path)
        except OSError:  # not empty (something was written there), or already gone
            pass


class PendingOutput:
    """A file written at the end of a command. check() makes its folder and the file, when
    absent (an existing file keeps its content until written); write() replaces the file whole;
    discard() removes what check() made when nothing was written since.

    A path that names a descriptor of this process (/dev/stdout, /dev/fd/N as the shell's
    `>(...)` gives) or a file that is no regular one (a FIFO, a device) is a stream: check() only
    asks whether it may be written, never opening it (a FIFO's reader would take that close for
    the end of the report, and the final write would then wait for a reader forever), and
    write() writes it in place."""

    def __init__(self, path: str, make_folder: bool = False) -> None:
        self.path = path
        self.make_folder = make_folder
        self.created = False
        self.folders: list[str] = []

    def check(self) -> Optional[str]:
        """None when the file can be written, else why not (the OS's reason). With
        `make_folder`, a missing folder is made first."""
        if not self.path:
            return "the path is empty"
        fd = _descriptor(self.path)
        if fd is not None:
            return _unwritable_descriptor(fd)
        try:
            if self.make_folder:
                self.folders = make_folders(os.path.dirname(os.path.abspath(self.path)))
            if _is_stream_file(self.path):
                return None if os.access(self.path, os.W_OK) else os.strerror(errno.EACCES)
            self.created = not os.path.exists(self.path)
            open(self.path, "a").close()
        except OSError as e:
            self.created = False
            self.discard()
            return str(e.strerror or e)
        return None

    def write(self, text: str) -> None:
        """Replaces the file with `text`, whole: written to a temporary file beside it, synced,
        then renamed over it, so that a failure (OSError, raised as it came) or an interrupt
        leaves the previous content. A stream (see the class) is written in place, and so is a
        file in a folder that takes no new file (one the user may not add to, holding a file they
        may write: what check() found)."""
        fd = _descriptor(self.path)
        if fd is not None:
            _write_descriptor(fd, text)
            return
        target = os.path.realpath(self.path)  # a link keeps pointing at the report
        tmp = None
        if not os.path.exists(target) or os.path.isfile(target):
            try:
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=f".{os.path.basename(target)}.",
                                           suffix=".tmp")
            except OSError:
                pass
        if tmp is None:
            with open(target, "w") as f:
                f.write(text)
        else:
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                    os.fchmod(f.fileno(), _mode_for(target))
                os.replace(tmp, target)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        self.created = False
        self.folders = []

    def discard(self) -> None:
        """Removes the file and folders check() made, unless write() ran since."""
        if self.created:
            try:
                if os.path.getsize(self.path) == 0:
                    os.remove(self.path)
            except OSError:
                pass
            self.created = False
        remove_empty_folders(self.folders)
        self.folders = []


def is_stream(path: str) -> bool:
    """Whether PendingOutput(path) writes a stream in place rather than a file (see the class):
    such a path has no folder to put other outputs next to it."""
    return _descriptor(path) is not None or _is_stream_file(path)


def _is_stream_file(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:  # absent (made as a file), or refused: open() says why
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


_FD_NAME = re.compile(r"0|[1-9][0-9]*")  # as the kernel spells a descriptor (no leading zeros)


def _descriptor(path: str) -> Optional[int]:
    """The descriptor of this process that `path` names through /proc/self/fd (/dev/stdout,
    /dev/fd/N, /proc/self/fd/N), else None. Its links are followed one by one: the last one
    resolves to what the descriptor is (`pipe:[1234]`, or a file, which os.path.realpath would
    then name as if it were any path), not to the descriptor itself."""
    fd_folder = os.path.realpath("/proc/self/fd")
    for _ in range(40):  # the kernel's limit on links in a path
        folder, name = os.path.split(os.path.abspath(path))
        if _FD_NAME.fullmatch(name) and os.path.realpath(folder) == fd_folder:
            return int(name)
        try:
            path = os.path.join(folder, os.readlink(path))
        except OSError:  # not a link: a path like any other
            return None
    return None


def _unwritable_descriptor(fd: int) -> Optional[str]:
    """None when descriptor `fd` is open for writing, else why not (as a write would say)."""
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError as e:
        return str(e.strerror or e)
    return os.strerror(errno.EBADF) if flags & os.O_ACCMODE == os.O_RDONLY else None


def _write_descriptor(fd: int, text: str) -> None:
    """Writes through a duplicate of `fd`, which shares its offset: into a file that stdout is
    (`> out.txt`) the text goes after what was printed, as `echo ...; cat report` would put it,
    and what is printed next goes after it. Opening the path again would start an offset of its
    own: "w" would cut what was printed, "a" would leave stdout's offset behind, to overwrite
    the report with the next line printed."""
    for stream in (sys.stdout, sys.stderr):
        try:
            same = stream.fileno() == fd
        except (OSError, ValueError, AttributeError):  # not a file (a test's capture)
            continue
        if same:
            stream.flush()  # what it printed comes first
    with os.fdopen(os.dup(fd), "w") as f:
        f.write(text)


def _mode_for(path: str) -> int:
    """The permissions a plain open(path, "w") would give: the existing file's, else 0666 less
    the umask (mkstemp makes its file 0600)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


class StdoutLost(Exception):
    """Standard output could not be written; `error` is the OSError (EPIPE: the reader went
    away)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class GuardedStdout:
    """Wraps a text stream so that a failed write or flush raises StdoutLost instead of the
    OSError, and every later write is dropped (the failure is answered once)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.lost: Optional[OSError] = None

    def write(self, text: str) -> int:
        return self._guarded(self._stream.write, text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def _guarded(self, call: Any, *args: Any) -> Any:
        if self.lost is not None:
            return len(args[0]) if args else None
        try:
            return call(*args)
        except OSError as e:
            self.lost = e
            _silence(self._stream)
            raise StdoutLost(e) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _silence(stream: TextIO) -> None:
    """Points the stream's file descriptor at /dev/null, so that the text still buffered in it
    does not fail again when Python flushes it at exit."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return  # not a file (a test's capture): nothing is flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


@contextlib.contextmanager
def guarded_stdout() -> Iterator[GuardedStdout]:
    """sys.stdout wrapped in a GuardedStdout for the duration of the block."""
    old = sys.stdout
    guard = GuardedStdout(old)
    sys.stdout = guard  # type: ignore[assignment]
    try:
        yield guard
    finally:
        sys.stdout = old
