"""The one file writer of edgesep: atomic files, strict JSON, staged output folders and folder locks.

Ground floor: imports only ``edgesep.errors``. Every file edgesep writes for a user goes through here, so
a reader never sees half a file, no JSON holds NaN or Infinity, and an output folder receives a set of files
only when every step that made them succeeded.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from edgesep.errors import OutputError

PathLike = Union[str, "os.PathLike[str]"]
LOCK_NAME = ".edgesep.lock"
STAGING_PREFIX = ".edgesep-staging-"


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays made plain and every non-finite float replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if hasattr(obj, "to_dict"):
        return jsonable(obj.to_dict())
    if hasattr(obj, "tolist"):  # numpy scalar or array
        return jsonable(obj.tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def dumps(doc: Any, indent: Optional[int] = 2) -> str:
    """Strict JSON text of ``doc`` (non-finite floats become null; never NaN or Infinity)."""
    return json.dumps(jsonable(doc), indent=indent, allow_nan=False)


def _describe_os_error(path: PathLike, e: OSError) -> str:
    reason = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
              errno.EACCES: "permission denied", errno.EPERM: "permission denied",
              errno.ENOTDIR: "a parent is not a folder", errno.EISDIR: "it is a folder",
              errno.EDQUOT: "disk quota exceeded"}.get(e.errno or 0, e.strerror or type(e).__name__)
    return f"cannot write {os.fspath(path)}: {reason}"


def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder, then rename (atomic on POSIX)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(_describe_os_error(path, e)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        _unlink(tmp)
        raise OutputError(_describe_os_error(path, e)) from None
    except BaseException:
        _unlink(tmp)
        raise
    return path


def write_with(path: PathLike, make: Callable[[Path], Any]) -> Path:
    """Atomic write by a tool that writes to a path (``model.save``): ``make(tmp)`` writes a temp file in the
    same folder (named like ``path``, same suffix), which is then renamed onto ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
        os.unlink(name)  # the tool creates it (some refuse an existing file)
    except OSError as e:
        raise OutputError(_describe_os_error(path, e)) from None
    try:
        make(Path(name))
        os.replace(name, path)
    except OSError as e:
        _unlink(name)
        raise OutputError(_describe_os_error(path, e)) from None
    except BaseException:
        _unlink(name)
        raise
    return path


def move(source: PathLike, path: PathLike) -> Path:
    """Move a finished file (a tool's output) onto ``path`` in one rename; OutputError in one line."""
    try:
        os.replace(source, path)
    except OSError as e:
        raise OutputError(_describe_os_error(path, e)) from None
    return Path(path)


def open_log(path: PathLike):
    """A file a child process streams its output into (not atomic: it grows as the child runs); opening it
    fails in one line (OutputError)."""
    try:
        return open(path, "wb")
    except OSError as e:
        raise OutputError(_describe_os_error(path, e)) from None


def write_text(path: PathLike, text: str) -> Path:
    """Atomic text write (UTF-8)."""
    return write_bytes(path, text.encode())


def write_json(path: PathLike, doc: Any) -> Path:
    """Atomic strict-JSON write of ``doc`` (indented, trailing newline)."""
    return write_text(path, dumps(doc) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unlink(path: PathLike) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def require_regular_file(path: PathLike, what: str = "file") -> Path:
    """``path`` if it is an existing regular file; else one line (a FIFO or device would block a reader)."""
    import stat

    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise OutputError(f"{what} not found: {path}", exit_code=1) from None
    except OSError as e:
        raise OutputError(f"cannot read {path}: {e.strerror}") from None
    if stat.S_ISDIR(mode):
        raise OutputError(f"{what} {path} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise OutputError(f"{what} {path} is not a regular file (a pipe or device would block)")
    return path


def check_writable_dir(path: PathLike) -> Path:
    """Fail early (one line) when ``path`` cannot become a writable output folder; creates nothing.

    Checks that ``path`` is not an existing file and that it, or the nearest existing parent it would be
    created in, accepts a new file.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"--out {path} exists and is not a folder")
    probe_dir = path
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise OutputError(f"cannot create {path}: {probe_dir} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".edgesep-probe-", dir=probe_dir)
    except OSError as e:
        raise OutputError(_describe_os_error(path, e)) from None
    os.close(fd)
    _unlink(tmp)
    return path


@contextlib.contextmanager
def locked_dir(path: PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on output folder ``path`` (created); a second writer gets one line at once.

    A folder this call created is removed again when it is left empty (a failed first export leaves no
    empty ``--out`` behind).
    """
    import fcntl

    path = Path(path)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise OutputError(_describe_os_error(path, e)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"another edgesep is writing to {path}; wait for it or use another --out") from None
        try:
            yield path
        finally:
            _unlink(path / LOCK_NAME)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):  # not empty: the export's files are there, keep it
                path.rmdir()


class StagedDir:
    """A private folder inside ``out_dir`` whose files move into ``out_dir`` only on :meth:`commit`.

    Use as ``with StagedDir(out) as stage: ...write into stage.path...; stage.commit(replaces=old_names)``.
    Leaving the block without a commit (an error, Ctrl-C, SIGTERM turned into KeyboardInterrupt) removes
    the staging folder and leaves ``out_dir`` as it was.
    """

    def __init__(self, out_dir: PathLike):
        self.out_dir = Path(out_dir)
        self.path: Optional[Path] = None
        self.committed: list[str] = []

    def __enter__(self) -> "StagedDir":
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.out_dir))
        except OSError as e:
            raise OutputError(_describe_os_error(self.out_dir, e)) from None
        return self

    def commit(self, replaces: Iterable[str] = ()) -> list[str]:
        """Move every staged entry into ``out_dir``; then delete ``replaces`` names that were not re-made.

        ``replaces`` lists what a previous run put into ``out_dir`` (e.g. the artifacts of an older
        export.json), so that a folder never describes two runs. Returns the names moved in.
        """
        assert self.path is not None, "commit() outside the with block"
        names = sorted(p.name for p in self.path.iterdir())
        try:
            for name in names:
                target = self.out_dir / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                os.replace(self.path / name, target)
            for name in set(replaces) - set(names):
                stale = self.out_dir / name
                if Path(name).name == name and stale.is_file():
                    _unlink(stale)
        except OSError as e:
            raise OutputError(_describe_os_error(self.out_dir, e)) from None
        self.committed = names
        return names

    def __exit__(self, *exc) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
