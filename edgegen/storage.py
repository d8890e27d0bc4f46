"""How edgegen writes to disk, so that nothing a user has is lost.

- Files are written whole under a temporary name, flushed, then renamed over the target
  (`atomic_write_bytes`): a reader, or a crash, sees the old bytes or the new.
- A directory output (a package, a checkpoint) is built in a staging directory beside it and
  switched in with one rename (`staged_directory`); an existing one is swapped out atomically
  where the system can (Linux's renameat2 RENAME_EXCHANGE).
- A command that writes a package or a checkpoint holds its writer lock (`writer_lock`): a
  second writer waits for the first, then sees what it wrote; it never interleaves with it.
- What a killed run leaves behind (staging directories, temporary files) has names only
  edgegen uses, and the next writer of the same output removes them (`clean_leftovers`).
- Files get the mode the umask gives new files, as other tools' files do.

Crash safety is tested by killing writers at each `fault_point` in turn (tests/test_crash_safety.py,
benchmarks/crash_safety.py). This module is runtime code: it must never import torch or onnx.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from .errors import ConfigError, DataError, EdgegenWarning, OutputExistsError, PackageBusyError

LOCK_POLL_S = 0.2
LOCK_SAY_EVERY_S = 60.0   # a writer waiting on another says so again this often (a CI log of a hung holder)


# -- fault points: where a crash-safety test kills a writer --------------------------------------

_faults_reached = 0


def fault_point(name: str) -> None:
    """A place in a write where a kill must leave the output as it was before or as it is after.
    With EDGEGEN_FAULT_LOG set, each point reached is appended to that file (to count them);
    with EDGEGEN_FAULT_AT=N, the process kills itself (SIGKILL) at the N-th point reached."""
    log, at = os.environ.get("EDGEGEN_FAULT_LOG"), os.environ.get("EDGEGEN_FAULT_AT")
    if log is None and at is None:
        return
    global _faults_reached
    _faults_reached += 1
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{_faults_reached} {name}\n")
    if at is not None and _faults_reached == int(at):
        _kill_self()


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


# -- whole files ----------------------------------------------------------------------------------

def atomic_write_bytes(path: str | os.PathLike, data: bytes, follow_symlink: bool = False) -> None:
    """`data` written at `path` as atomic_write_with writes."""
    atomic_write_with(path, lambda f: f.write(data), follow_symlink)


def atomic_write_with(path: str | os.PathLike, write: Callable[[BinaryIO], object], follow_symlink: bool = False) -> None:
    """What `write(file)` writes into a binary file, written at `path`: to a temporary name beside `path`, flush it to disk, then rename over it: a reader
    never sees half a file, a failed write leaves the old one in place, and after a crash the
    name holds the old bytes or the new, never an empty file. The file gets the mode the umask
    gives a new file (or keeps the one it had), as other tools' files do.

    follow_symlink, for a file the user named (--out, --json): a symbolic link there is written
    through, as a shell's > and Pillow's save write through it, so the link stays and the file it
    points to (made, if it is missing) gets the bytes. A package's own files are never followed:
    a link in a received package could point anywhere."""
    path = Path(path)
    if follow_symlink and path.is_symlink():
        path = Path(os.path.realpath(path))
    _make_room(path, "output")
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = creation_mode(directory=False)
    fd, tmp = _temporary_beside(path)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            target = _KeepsWriteErrors(f)
            try:
                write(target)
                f.flush()
                os.fsync(f.fileno())
            except Exception as exc:   # a full disk, said for `path`, the user's output, not the temporary name
                # the write's own error, or flush's and fsync's, which name no file; another file's (a
                # callback that reads one) names its own, and stays as it is
                nameless = isinstance(exc, OSError) and exc.errno is not None and exc.filename is None
                error = target.error or (exc if nameless else None)
                if error is None:
                    raise
                raise OSError(error.errno, error.strerror, str(path)) from exc
        fault_point(f"written {path.name} under a temporary name")
        _rename_onto(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)
    fault_point(f"renamed {path.name} into place")


class _KeepsWriteErrors:
    """The file a write callback writes into, keeping the OSError a write raised: a library writing
    through it may raise its own error instead (torch.save on a full disk: "unexpected pos")."""

    def __init__(self, file: BinaryIO):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str):
        return getattr(self.file, name)


def _rename_onto(tmp: str, path: Path) -> None:
    """os.replace, whose refusal (an immutable or otherwise protected file) names `path`, the
    user's output, not the temporary name it would have named first."""
    try:
        os.replace(tmp, path)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None


def _make_room(path: Path, what: str) -> None:
    """The folders on the way to a file about to be written, made; a directory at the file's own
    path, or a file on the way, refused (said here, not as a failure to rename onto it)."""
    _refuse_directory(path, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise _file_on_the_way(path, what) from None


def _refuse_directory(path: Path, what: str) -> None:
    """A directory, or another kind of file than a regular one (a FIFO, a device, through a link
    too), at a file output's path: refused, since the rename that writes the output would replace
    it with a regular file (as root, /dev/null)."""
    kind = file_kind(path)
    if kind == "a directory":
        raise OutputExistsError(f"{what} {str(path)!r}: expected a file to write, found a directory")
    if kind not in (None, "a file"):
        raise OutputExistsError(f"{what} {str(path)!r}: expected a regular file to replace (or none), found {kind}, "
                                "which writing the output (a new file renamed over the name) would replace")


def file_kind(path: str | os.PathLike) -> str | None:
    """What is at `path`, through links: "a file", "a directory", "a FIFO", "a character device",
    "a block device", "a socket", "a symbolic-link loop"; None where nothing is (or a link to nothing)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic-link loop"
        return None
    kinds = ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((kind for test, kind in kinds if test(mode)), "a special file")


def resolved(path: str | os.PathLike, what: str) -> Path:
    """Path(path).resolve(), where a symbolic-link loop is refused as the option's (Python before
    3.13 raises RuntimeError for one)."""
    try:
        return Path(path).resolve()
    except RuntimeError:
        raise ConfigError(f"{what} {str(path)!r}: expected a path, found a symbolic-link loop on it") from None


def _file_on_the_way(path: Path, what: str) -> OutputExistsError:
    return OutputExistsError(f"{what} {str(path)!r}: expected a folder to write it in, found a file on the way to it")


def _temporary_beside(path: Path, folder: Path | None = None) -> tuple[int, str]:
    """A new temporary file beside `path` (or in `folder`) as (fd, name); where the system refuses
    one, the error names `path`, the user's output, not the temporary name."""
    try:
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder or path.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None


def refuse_empty(path: str | os.PathLike, what: str) -> None:
    """An empty path is refused: the system reads it as the working folder (which a folder output
    would replace), or as no file at all."""
    if str(path) == "":
        raise ConfigError(f"{what}: expected a path, found an empty one ('')")


def refuse_nameless(path: str | os.PathLike, extension: str, what: str) -> None:
    """A file named only by its extension (".txt") is a hidden file of no name: refused."""
    if os.path.basename(str(path)).lower() == extension:
        raise ConfigError(f"{what} {str(path)!r}: expected a file name before {extension}, found only the extension "
                          "(a hidden file)")


def check_writable(path: str | os.PathLike, what: str) -> None:
    """Refuse, before any work, an output the command could not write at its end: a directory, a
    file on the way to it, or a folder the system will not write in (probed with a temporary file
    in the nearest folder that exists, removed at once). No folder is made: the write makes them."""
    refuse_empty(path, what)
    resolved(path, what)   # a symbolic-link loop said here, before anything resolves it
    path = Path(path)
    _refuse_directory(path, what)
    if path.is_file() and not os.access(path, os.W_OK):   # the user's protection, which a rename over it would pass
        raise OutputExistsError(f"{what} {str(path)!r}: expected a file this user may replace (or none), found a "
                                "read-only one (chmod u+w it to let edgegen replace it)")
    _writable_folder_on_the_way(Path(os.path.realpath(path)), what, "file", shown=path)   # a link: where it points


def check_files_writable_in(folder: str | os.PathLike, what: str) -> None:
    """Refuse, before any work, an existing folder the system will not let this user write files in
    (a package on read-only storage that a command adds files to)."""
    _writable_folder_on_the_way(Path(folder) / ".probe", what, "file", shown=folder)


def can_write_files_in(folder: str | os.PathLike) -> bool:
    """Whether this user can make a file in the existing `folder` (probed with a temporary file,
    removed at once: the file modes do not tell, a read-only mount or root's bypass)."""
    try:
        _probe_file_in(Path(folder), Path(folder) / ".probe")
    except OSError:
        return False
    return True


def check_folder_writable(out: str | os.PathLike, what: str = "output") -> None:
    """Refuse, before any work, a folder output the system will not let this user make (no folder is made)."""
    resolved(out, what)   # a symbolic-link loop said here, before anything resolves it
    if os.path.exists(out) and not os.path.isdir(out):   # a file in its place: mkdir's bare FileExistsError
        raise OutputExistsError(f"{what} {str(out)!r}: expected a folder, found a file")
    _writable_folder_on_the_way(Path(os.path.realpath(out)), what, "folder", shown=out)


def _writable_folder_on_the_way(path: Path, what: str, made: str, shown: str | os.PathLike | None = None) -> None:
    """Refuse `path` where the nearest of its folders that exists is not a folder this user can
    write in (probed with a temporary file, removed at once); no folder is made here. `shown`:
    the path as the user gave it, where `path` is resolved."""
    shown = Path(path if shown is None else shown)
    existing = next(folder for folder in path.absolute().parents if folder.exists())
    if not existing.is_dir():
        raise _file_on_the_way(shown, what)
    try:
        _probe_file_in(existing, path)
    except OSError as exc:   # a read-only or system folder (/proc): said as the option's, not as the system's error
        raise ConfigError(f"{what} {str(shown)!r}: expected a folder this user can write a {made} in, found "
                          f"{str(existing)!r}, where the system refused one ({exc.strerror or exc})") from None


def _probe_file_in(folder: Path, path: Path) -> None:
    """Make a temporary file in `folder` and remove it at once, or raise OSError naming `path`."""
    fd, tmp = _temporary_beside(path, folder)
    os.close(fd)
    # made, so the folder takes files. The probe runs before its command waits for the writer lock,
    # and the holder's cleanup of temporaries (optimize's) may have removed it already: two optimizes
    # of one package at once failed as "the system refused one (No such file or directory)"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str, follow_symlink: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), follow_symlink)


def creation_mode(directory: bool) -> int:
    """The mode open() or mkdir() gives a new file (0666) or directory (0777) under the process's
    umask. mkstemp and mkdtemp make theirs private (0600, 0700), which a service user other
    than the writer could not read, so edgegen sets this mode on what they made."""
    return (0o777 if directory else 0o666) & ~_umask()


def _umask() -> int:
    # Linux reports it in /proc; elsewhere os.umask reads it only by setting it (briefly)
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_directory(directory: str | os.PathLike) -> None:
    """Flush a directory's entries (a rename into it) to disk, where the system allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- directory outputs ----------------------------------------------------------------------------

def refuse_existing(out: str | os.PathLike, overwrite: bool) -> None:
    """Raise OutputExistsError if `out` exists and replacing it was not asked for."""
    refuse_empty(out, "output")
    if os.path.exists(out) and not overwrite:
        raise OutputExistsError(f"output {str(out)!r}: expected a path that does not exist yet, found one (pass --force, or overwrite=True in Python, to replace it)")


def refuse_output_folder(out: str | os.PathLike, overwrite: bool, holds: str, kind: str,
                         reads: Iterable[str | os.PathLike] = (),
                         owns: Callable[[Path], Iterable[str]] | None = None) -> None:
    """Every refusal of a folder output that needs no work (staged_directory's, which a long
    command such as training calls before it starts): an empty path, one that exists where
    replacing it was not asked for or would delete what edgegen did not write, and one that could
    not be made (a file on the way to it, a folder the system will not write in)."""
    refuse_empty(out, "output")
    refuse_replacing(out, overwrite, holds, kind, reads, owns)
    check_folder_writable(out)
    if overwrite and os.path.isdir(out):
        _refuse_unmovable(out)


# Linux's FS_IOC_GETFLAGS (_IOR('f', 1, long)) and the inode flags under which a folder cannot be
# renamed (chattr +i, chattr +a)
_FS_IOC_GETFLAGS, _IMMUTABLE_FL, _APPEND_FL = 0x80086601, 0x10, 0x20


def _refuse_unmovable(out: str | os.PathLike) -> None:
    """Refuse, before any work, an existing folder output that the switch at the end could not
    move aside (_switch_in renames it): a mount point (EBUSY: an output bind-mounted into a
    container), a folder marked immutable or append-only, or one in a sticky folder (/tmp) that
    this user owns neither. Else the whole export or training ran first and then failed."""
    shown, path = str(out), Path(os.path.realpath(out))
    if os.path.ismount(path) or str(path) in _mount_points():
        raise OutputExistsError(f"output {shown!r}: expected a folder edgegen can replace by renaming, found a mount "
                                "point, which cannot be renamed: give a folder inside it as the output")
    flags = _inode_flags(path)
    if flags & (_IMMUTABLE_FL | _APPEND_FL):
        mark = "immutable" if flags & _IMMUTABLE_FL else "append-only"
        raise OutputExistsError(f"output {shown!r}: expected a folder edgegen can replace, found one marked {mark} "
                                f"(chattr -{'i' if mark == 'immutable' else 'a'} it to let edgegen replace it, or choose "
                                "another output)")
    parent, user = path.parent.stat(), os.geteuid()
    if parent.st_mode & stat.S_ISVTX and user != 0 and user not in (path.stat().st_uid, parent.st_uid):
        raise OutputExistsError(f"output {shown!r}: expected a folder this user may replace, found another user's in "
                                f"{str(path.parent)!r}, where only a folder's owner may move it (the sticky bit): "
                                "choose another output")


def _mount_points() -> set[str]:
    """The mount points this process sees (Linux's /proc/self/mountinfo; none elsewhere): a folder
    bind-mounted from the same file system, which os.path.ismount does not tell (a container's
    -v /data beside -v /data/out)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
            # the fifth field; a space, tab, newline or backslash in it written as an octal escape (\040)
            return {re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4]) for line in info if line.strip()}
    except (OSError, IndexError):
        return set()


def _inode_flags(path: Path) -> int:
    """The folder's inode flags (lsattr's), or 0 where the system or the file system does not keep
    them, or the folder cannot be opened."""
    if not sys.platform.startswith("linux"):
        return 0
    import fcntl
    import struct

    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, bytes(8))[:4])[0]
    except OSError:   # ENOTTY, EOPNOTSUPP: a file system without such flags
        return 0
    finally:
        os.close(fd)


def refuse_replacing(out: str | os.PathLike, overwrite: bool, holds: str, kind: str,
                     reads: Iterable[str | os.PathLike] = (),
                     owns: Callable[[Path], Iterable[str]] | None = None) -> None:
    """An existing `out` that may not be replaced: first what --force could not replace either (a
    folder of other files, the input), said as that, not with the advice to pass --force; then one
    that exists where replacing it was not asked for."""
    refuse_replacing_other(out, holds, kind, reads, owns)
    refuse_existing(out, overwrite)


# what killed writers leave beside what they wrote: staging folders and old outputs moved aside
# (clean_leftovers), temporary files (atomic_write_bytes); `name` is what they were writing. An old
# output's name carries edgegen's mark: a user's own hidden copy (.vae.20261206.old) is theirs
KILLED_WRITERS_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.([a-z0-9_]{8}\.(partial|tmp)|edgegen-\d+\.old)$")

# what edgegen's writes leave in a folder: the above, and writer locks (.NAME.lock)
LEFTOVER = re.compile(rf"{KILLED_WRITERS_LEFTOVER.pattern}|^\..+\.lock$")


# (the file that marks it, what it is): edgegen's other outputs, said as such where one kind would replace another
EDGEGEN_KINDS = (("edgegen.json", "an edgegen package"), ("weights.safetensors", "an edgegen checkpoint"))


def refuse_replacing_other(out: str | os.PathLike, holds: str, kind: str, reads: Iterable[str | os.PathLike] = (),
                           owns: Callable[[Path], Iterable[str]] | None = None) -> None:
    """Raise OutputExistsError where replacing `out` would delete what edgegen did not write, or
    what this command reads: `out` is, or holds, one of `reads` (exporting a folder onto itself),
    is a folder with files in it but without `holds`, the file every `kind` has, or holds names
    besides those `owns(out)` gives, the ones `kind` is written with (a user's notes dropped into
    a checkpoint folder). Commands call it before their work too, so that a long one (training)
    is refused before it starts."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputExistsError(f"output {str(out)!r}: expected a directory to replace, found a file")
    where = out.resolve()
    for given in reads:
        read = Path(given).resolve()
        if read == where or where in read.parents:
            raise OutputExistsError(f"output {str(out)!r}: expected a folder apart from this command's input, found "
                                    f"that it {'is' if read == where else 'holds'} the input {str(given)!r}: replacing it "
                                    "would delete the input; choose another output")
    # what edgegen's own writes leave inside (a killed one's .NAME.XXXX.tmp, a nested output's lock,
    # stage or moved-aside copy) does not make a folder someone else's; anything else does, hidden
    # (.git, .venv) or not
    try:
        entries = sorted(e.name for e in out.iterdir() if not LEFTOVER.match(e.name))
    except PermissionError:   # what replacing it would delete cannot be told
        raise OutputExistsError(f"output {str(out)!r}: expected a folder this user may list, to tell what replacing it "
                                "would delete, found one it may not (its permissions)") from None
    if entries and holds not in entries:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        other = next((what for marker, what in EDGEGEN_KINDS if marker in entries), "a folder of other files")
        raise OutputExistsError(f"output {str(out)!r}: expected {kind} to replace ({holds} in it) or an empty folder, "
                                f"found {other} ({shown}); edgegen replaces only what it wrote: choose "
                                "another output, or remove that folder yourself")
    owned = set(owns(out)) if owns and entries else set()
    foreign = [name for name in entries if name not in owned] if owns else []
    if foreign:
        shown = ", ".join(foreign[:4]) + (", ..." if len(foreign) > 4 else "")
        raise OutputExistsError(f"output {str(out)!r}: expected only what edgegen writes in {kind}, found {shown} "
                                "beside it, which replacing the folder would delete: move them out, choose another "
                                "output, or remove that folder yourself")


@contextlib.contextmanager
def staged_directory(out: str | os.PathLike, *, holds: str, kind: str, overwrite: bool = False,
                     reads: Iterable[str | os.PathLike] = (),
                     owns: Callable[[Path], Iterable[str]] | None = None, lock_held: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory beside `out`; on success it replaces `out`.

    `out` is replaced only where it is what this writer writes (`kind`, with the file `holds`, and
    nothing but what `owns` names) or an empty folder, and holds none of `reads`, the paths the
    command reads (refuse_replacing_other).
    The whole of it holds `out`'s writer lock, so a second writer waits and then sees the
    first one's output (and is refused without overwrite). On any exception the staging
    directory is removed and `out`, if it existed, is left untouched; a kill at any instant
    leaves `out` as it was or complete, and the staging directory for the next writer to clean.
    lock_held: the caller holds that lock already (train, for the whole of its training).
    """
    # the folder itself, as the lock takes it: "." too has a name and a parent to stage beside, and a
    # symbolic link is followed, not replaced
    refuse_output_folder(out, overwrite, holds, kind, reads, owns)   # before taking the lock: fails fast without waiting
    given, out = out, Path(os.path.realpath(out))
    with contextlib.nullcontext() if lock_held else writer_lock(out, "writing it"):
        clean_leftovers(out)   # first: it may put back an old output a killed writer moved aside
        refuse_replacing(given, overwrite, holds, kind, reads, owns)   # again: a writer that held the lock may have made it
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        try:
            os.chmod(stage, creation_mode(directory=True))
            fault_point(f"staging {out.name}")
            yield stage
            fsync_directory(stage)
            fault_point(f"staged {out.name} complete")
            inside = _working_directory() == out
            _switch_in(stage, out)
            if inside:   # the old folder is gone: the process stands in the new one instead
                os.chdir(out)
        except BaseException:
            remove_tree(stage, ignore_errors=True)
            raise
        remove_tree(stage, ignore_errors=True)   # after a swap: the old output


def _working_directory() -> Path | None:
    try:
        return Path(os.path.realpath(os.getcwd()))
    except OSError:
        return None


def _switch_in(stage: Path, out: Path) -> None:
    """Put `stage` at `out`. A new output: one rename. An existing one: swapped with the stage
    in one step where the system can (the stage then holds the old output), else moved aside
    first, which leaves a window where `out` is missing and the old output sits beside it."""
    if not out.exists():
        os.replace(stage, out)
    elif not _exchange(stage, out):
        old = out.parent / f".{out.name}.edgegen-{os.getpid()}.old"
        os.replace(out, old)
        fault_point(f"moved the old {out.name} aside")
        os.replace(stage, out)
        remove_tree(old, ignore_errors=True)
    fsync_directory(out.parent)
    fault_point(f"switched {out.name} in")


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system or the
    file system does not support it; OSError for any other failure (a real one, not to fall
    back from)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(b))


# what marks an output edgegen writes (a package, a checkpoint, a Triton model folder, a demo): a
# folder named as an earlier edgegen's moved-aside output that holds one is said, never taken
EARLIER_MARKS = ("edgegen.json", "weights.safetensors", "config.pbtxt", "results.json")


def _holds_file(folder: Path, name: str) -> bool:
    """Whether `folder` holds the file `name`; False where this user may not look (another user's
    folder in a shared one: Path.is_file raises PermissionError on Python 3.11)."""
    try:
        return (folder / name).is_file()
    except OSError:
        return False


def clean_leftovers(out: Path) -> list[Path]:
    """Remove what killed writers of `out` left beside it: its staging directories
    (.NAME.XXXXXXXX.partial, mkdtemp's names) and old outputs moved aside (.NAME.edgegen-PID.old). An old
    output moved aside by a writer killed before it switched the new one in (the fallback where
    the system cannot exchange two paths) is the only copy: it is put back, not removed. Only a
    holder of `out`'s writer lock calls this, so none belongs to a live writer."""
    name = re.escape(out.name)
    staging, moved = re.compile(rf"^\.{name}\.[a-z0-9_]{{8}}\.partial$"), re.compile(rf"^\.{name}\.edgegen-\d+\.old$")
    # an edgegen before 2026-12-06 named it so, by its process id (at most 7 digits: Linux's pid_max is
    # at most 4194304), where a user's dated copy (.vae.20261206.old) has 8
    earlier = re.compile(rf"^\.{name}\.\d{{1,7}}\.old$")
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(out.parent.iterdir()):
            if not entry.is_dir() or entry.is_symlink():
                continue
            if earlier.match(entry.name) and (mark := next((m for m in EARLIER_MARKS if _holds_file(entry, m)), None)):
                warnings.warn(f"{str(entry)!r}: a folder an earlier edgegen may have moved aside while it wrote "
                              f"{str(out)!r}, killed before it finished (it holds {mark}), or a copy of yours: left as "
                              f"it is; if it is the old {out.name} you want back, rename it", EdgegenWarning,
                              stacklevel=2)
            if moved.match(entry.name) and not out.exists():
                os.replace(entry, out)      # the old output, restored
            elif staging.match(entry.name) or moved.match(entry.name):
                remove_tree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def clean_leftover(leftover: Path) -> Path:
    """Remove `leftover` (a KILLED_WRITERS_LEFTOVER name) and what else killed writers of its
    output left, holding that output's lock so that no live writer's part is taken
    (PackageBusyError while one writes it); an old output moved aside with nothing in its place is
    put back, the only copy. Returns the output's path."""
    beside = leftover.parent / KILLED_WRITERS_LEFTOVER.match(leftover.name)["name"]
    with writer_lock(beside, "cleaning what a killed command left", wait=False):
        if leftover.name.endswith(".tmp"):
            if leftover.is_symlink() or leftover.is_file():   # a folder of that name is no write of edgegen's
                leftover.unlink(missing_ok=True)
        else:
            clean_leftovers(beside)
            if leftover.is_symlink() or leftover.is_file():   # a leftover's name on no folder: removed, not followed
                leftover.unlink(missing_ok=True)
    return beside


def remove_whole(target: Path, doing: str, wait: bool = False, still: Callable[[], bool] | None = None) -> None:
    """Remove the file or folder `target` so that no reader ever finds part of it: under its writer
    lock (PackageBusyError while another command writes it, or with `wait` after it), leftovers of
    killed writers first, then a folder is moved to a staging name and deleted there; a kill during
    the deletion leaves that staging folder for the next holder's clean_leftovers, never a half
    folder at `target`. `still`: asked under the lock, whether the reason to remove it holds yet
    (another command may have replaced it while this one waited)."""
    with writer_lock(target, doing, wait=wait):
        if still is not None and not still():
            return
        clean_leftovers(target)
        if target.is_dir() and not target.is_symlink():
            doomed = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
            os.replace(target, doomed)   # onto the empty folder mkdtemp made
            remove_tree(doomed)   # a failure is said; what is left is a leftover, not a half `target`
        else:
            target.unlink(missing_ok=True)


def remove_tree(path: Path, ignore_errors: bool = False) -> None:
    """Delete a folder edgegen wrote (a staging folder, an old output), read-only folders in it
    too: a copy of a package kept on read-only storage keeps its modes, and a folder without
    write permission refuses the removal of what it holds, which shutil.rmtree would leave behind.
    Only the folders inside `path` are made writable, never one a symbolic link in it points to."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        _owner_may_change(path)
        for folder, names, _ in os.walk(path):   # top-down: a folder is opened after it is made readable
            for name in names:
                child = os.path.join(folder, name)
                if not os.path.islink(child):
                    _owner_may_change(Path(child))
    shutil.rmtree(path, ignore_errors=ignore_errors)


def _owner_may_change(folder: Path) -> None:
    with contextlib.suppress(OSError):   # not ours to change: rmtree says what it cannot remove
        mode = folder.lstat().st_mode & 0o7777
        if mode & 0o700 != 0o700:
            os.chmod(folder, mode | 0o700)


def clean_temporaries(directory: Path) -> list[Path]:
    """Remove the temporary files of killed atomic writes in `directory` (.NAME.*.tmp); for a
    holder of the directory's writer lock."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in directory.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


# -- the user's cache ------------------------------------------------------------------------------

def data_files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """The files under `folder` with one of `suffixes` (any case), sorted; hidden files and folders
    (names starting with a dot: macOS's ._ files, .ipynb_checkpoints) left out, as a user means
    "the data in this folder"; folders linked into it are followed (rglob left them out unsaid), each real
    folder once (a folder linked in twice is read once)."""
    return data_files_and_others(folder, suffixes, ())[0]


def data_files_and_others(folder: Path, suffixes: Iterable[str], others: Iterable[str]) -> tuple[list[Path], list[Path]]:
    """(data_files' files, the files with one of `others`' suffixes, which are not read: a link to
    nothing among them is no error), in one walk of `folder`."""
    suffixes, others = tuple(suffixes), tuple(others)
    found = sorted(p for p in _files_under(folder) if not p.name.startswith(".")
                   and p.suffix.lower() in suffixes + others)
    files = [p for p in found if p.suffix.lower() in suffixes]
    for path in files:   # a link to nothing was left out unsaid, where an unreadable file stops training
        if not path.exists():
            raise DataError(f"data file {str(path)!r}: expected a file to read, found a link to nothing "
                            f"({os.readlink(path)!r}): mend or remove the link")
    # a link to a folder named like an image: not a file
    return [p for p in files if p.is_file()], [p for p in found if p.suffix.lower() not in suffixes and p.is_file()]


def _files_under(folder: Path):
    """Every entry but a folder under `folder`, through linked folders, each real folder walked once (a
    link back up would loop); hidden folders left out, and links to a folder holding `folder` (a
    train/ linking to its parent would take in val/ and test/), said."""
    walked, top = set(), os.path.realpath(folder)
    for root, folders, names in os.walk(folder, followlinks=True):
        if (real := os.path.realpath(root)) in walked:
            folders[:] = []
            continue
        if real != top and top.startswith(real.rstrip(os.sep) + os.sep):
            warnings.warn(f"data folder {str(folder)!r}: {root!r} links to {real!r}, a folder holding it: left out",
                          EdgegenWarning, stacklevel=4)
            folders[:] = []
            continue
        walked.add(real)
        folders[:] = sorted(name for name in folders if not name.startswith("."))   # the first name of a folder wins
        yield from (Path(root) / name for name in names)


def user_cache_dir(checked: bool = True) -> Path:
    """edgegen's folder in the user's cache: $XDG_CACHE_HOME/edgegen, else ~/.cache/edgegen (a
    relative XDG_CACHE_HOME is ignored, as the XDG spec says, and so is a relative HOME: the
    cache would move with the working folder). A file where a folder of it should be is refused,
    naming the variable, not met later as the system's NotADirectoryError."""
    given = os.environ.get("XDG_CACHE_HOME", "")
    folder = (Path(given) if os.path.isabs(given) else _home() / ".cache") / "edgegen"
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None and checked:   # unchecked: for what is kept only where it can be (a judge)
        where = "$XDG_CACHE_HOME" if os.path.isabs(given) else "~/.cache"
        raise ConfigError(f"the cache {str(folder)!r} ({where}/edgegen): expected a folder, found a file on the way to "
                          f"it ({str(blocking)!r})")
    return folder


def _home() -> Path:
    """The user's home: $HOME where it is an absolute path, else the password database's."""
    home = os.environ.get("HOME")
    if home and os.path.isabs(home):
        return Path(home)
    try:
        if not home:   # Path.home's lookup: the password database (and Windows' own variables)
            return Path.home()
        import pwd   # POSIX; a relative HOME elsewhere is not looked past
        recorded = pwd.getpwuid(os.getuid()).pw_dir
        if os.path.isabs(recorded):
            return Path(recorded)
    except (RuntimeError, ImportError, KeyError):   # a user the password database does not know (a container's bare uid)
        pass
    said = f"HOME is the relative path {home!r}" if home else "HOME is unset"
    raise ConfigError(f"the cache: expected $XDG_CACHE_HOME (an absolute path) or a home directory to hold edgegen's "
                      f"cache, found neither ({said} and this user has no home in the password database): set "
                      "XDG_CACHE_HOME or HOME to an absolute path")


# -- writer locks ---------------------------------------------------------------------------------

@contextlib.contextmanager
def writer_lock(target: str | os.PathLike, doing: str, wait: bool = True) -> Iterator[None]:
    """Hold the writer lock of `target` (a package or checkpoint directory, existing or not):
    an flock on .NAME.lock beside it, which the system releases if the holder dies, so a killed
    writer never leaves it held. A second writer waits (saying who holds it, and again each
    LOCK_SAY_EVERY_S: a holder stopped or hung keeps it, the system cannot tell), or with
    wait=False is refused with PackageBusyError. The holder removes the lock file when done, and
    the folders it made to hold it where they stayed empty (a train refused for its --data left
    --out's parents behind)."""
    target = Path(target).resolve()    # one lock however the path is spelled (a symlink, ".")
    made = [folder for folder in [target.parent, *target.parent.parents] if not folder.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.parent / f".{target.name}.lock"
    started = said = None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, creation_mode(directory=False))
        except FileNotFoundError:   # the holder made the folder and removed it, empty, as it finished
            target.parent.mkdir(parents=True, exist_ok=True)
            continue
        if _try_lock(fd):
            if _same_file(fd, path):   # not a lock file its last holder removed as we opened it
                break
            os.close(fd)
            continue
        holder = _read_holder(fd)
        os.close(fd)
        if not wait:
            raise PackageBusyError(f"{str(target)!r}: expected no other edgegen command writing it, found {holder}")
        now = time.monotonic()
        if said is None:
            print(f"edgegen: waiting for {holder} to finish writing {str(target)!r}", file=sys.stderr)
            started = said = now
        elif now - said >= LOCK_SAY_EVERY_S:   # a holder stopped or hung: a log shows who, and for how long
            print(f"edgegen: still waiting for {holder} to finish writing {str(target)!r}, "
                  f"{(now - started) / 60:.0f} min so far", file=sys.stderr)
            said = now
        time.sleep(LOCK_POLL_S)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} ({' '.join(sys.argv[:3]) or 'python'}: {doing})".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)   # releases the lock
        for folder in made:   # deepest first; one that holds something now stays, and its parents
            try:
                folder.rmdir()
            except OSError:
                break


def writing_now(target: str | os.PathLike) -> str | None:
    """Who holds the writer lock of `target` now (writer_lock's holder text), or None: a look, not
    a wait, that creates nothing. An flock cannot be tested without taking it: a writer that asks in
    that moment waits a poll (LOCK_POLL_S), or with wait=False is refused, as if another command held it."""
    target = Path(target).resolve()
    try:
        fd = os.open(target.parent / f".{target.name}.lock", os.O_RDWR)
    except OSError:   # no lock file: no writer (or one this user may not open: said as none)
        return None
    try:
        if not _try_lock(fd):
            return _read_holder(fd)
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    import fcntl   # POSIX: Linux, macOS, the Jetson's L4T

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 300, 0).decode("utf-8", "replace").strip()
        if text:
            return text
    return "another edgegen command"
