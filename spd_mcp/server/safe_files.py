"""Writing files inside a folder without following or reusing a link: every writer of the server
uses this.

- ``write_files`` replaces whole files: each is written to a temporary name created exclusively
  (``O_CREAT | O_EXCL | O_NOFOLLOW``) in the target folder, then renamed over its final name; the
  rename is checked to have put that same file (same inode) at the final name. Final names that are
  links (symbolic, or a regular file with more than one hard link) or not regular files are refused
  before anything is written, and a refusal or failure removes every temporary file: nothing is
  left half-written, and a group of files is written whole or not at all.
- ``open_append`` opens a file for appending only when it is a plain regular file with one link.
- ``new_dir`` makes a fresh directory (``mkdtemp``) inside the folder for a multi-file result, and
  ``move_dir_into_place`` renames it to its final name with the same checks.

Every operation works through a descriptor of the folder (``dir_fd``), opened with ``O_NOFOLLOW``
after checking that the folder's path holds no symbolic link, so a component swapped for a link
later cannot redirect it. ``UnsafePathError`` (a ValueError) says what was refused and why.
"""

import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

_TMP_TRIES = 16


class UnsafePathError(ValueError):
    """A write refused because a path is a link, shared, or outside its folder."""


def check_folder(folder: Path) -> Path:
    """``folder`` if it is an absolute path of real directories (no symbolic link anywhere in
    it)."""
    folder = Path(os.path.abspath(folder))
    if os.path.realpath(folder) != str(folder):
        raise UnsafePathError(
            f"refusing to write in {folder}: its path goes through a symbolic link"
        )
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"refusing to write in {folder}: not a directory")
    return folder


@contextmanager
def _open_folder(folder: Path) -> Iterator[int]:
    folder = check_folder(folder)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if os.fstat(fd).st_ino != os.lstat(folder).st_ino:
            raise UnsafePathError(f"refusing to write in {folder}: it changed while being opened")
        yield fd
    finally:
        os.close(fd)


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UnsafePathError(f"refusing to write {name!r}: not a plain file name")


def _refusal(folder: Path, name: str, st: os.stat_result) -> UnsafePathError | None:
    """Why an existing entry may not be replaced or appended to (None: it may)."""
    where = f"{folder.name}/{name}"
    if stat.S_ISLNK(st.st_mode):
        return UnsafePathError(f"refusing to write {where}: it is a symbolic link; remove it first")
    if not stat.S_ISREG(st.st_mode):
        return UnsafePathError(f"refusing to write {where}: it is not a regular file")
    if st.st_nlink > 1:
        return UnsafePathError(
            f"refusing to write {where}: it has {st.st_nlink} hard links (a file elsewhere shares "
            "it); remove it first"
        )
    return None


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def check_replaceable(folder: Path, names: list[str]) -> None:
    """Raise UnsafePathError if any of ``names`` in ``folder`` exists as a link or a non-regular
    file."""
    with _open_folder(folder) as dfd:
        for name in names:
            _check_name(name)
            st = _lstat_at(dfd, name)
            if st is not None and (err := _refusal(folder, name, st)) is not None:
                raise err


def tmp_name(name: str) -> str:
    """A fresh, unpredictable temporary name next to ``name``."""
    return f".{name}.{secrets.token_hex(8)}.tmp"


def _create_exclusive(dir_fd: int, name: str) -> tuple[str, int]:
    """A new temporary file (never an existing entry or link); retried under other names on a
    clash."""
    for _ in range(_TMP_TRIES):
        tmp = tmp_name(name)
        try:
            return tmp, os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd
            )
        except FileExistsError:
            continue
    raise UnsafePathError(
        f"could not create a temporary file for {name!r}: {_TMP_TRIES} names were taken"
    )


def write_files(folder: Path, files: Mapping[str, bytes]) -> list[Path]:
    """Replace each ``name -> data`` in ``folder`` atomically, all or none (see the module
    docstring)."""
    check_replaceable(folder, list(files))
    made: dict[str, tuple[str, int]] = {}  # final name -> (temporary name, inode)
    with _open_folder(folder) as dfd:
        try:
            for name, data in files.items():
                tmp, fd = _create_exclusive(dfd, name)
                try:
                    made[name] = (tmp, os.fstat(fd).st_ino)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
            for name, (tmp, ino) in made.items():
                st = _lstat_at(dfd, name)
                if st is not None and (err := _refusal(folder, name, st)) is not None:
                    raise err
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                landed = _lstat_at(dfd, name)
                if landed is None or landed.st_ino != ino or not stat.S_ISREG(landed.st_mode):
                    raise UnsafePathError(
                        f"the write of {folder.name}/{name} did not land where intended"
                    )
                made[name] = ("", ino)
        finally:
            for tmp, _ in made.values():
                if tmp:
                    _unlink_quiet(dfd, tmp)
        os.fsync(dfd)
    return [folder / name for name in files]


def write_file(folder: Path, name: str, data: bytes) -> Path:
    return write_files(folder, {name: data})[0]


def open_append(folder: Path, name: str) -> int:
    """A descriptor appending to ``folder/name`` (created if missing); links and shared files
    refused."""
    _check_name(name)
    with _open_folder(folder) as dfd:
        flags = (
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        )
        try:
            fd = os.open(name, flags, 0o644, dir_fd=dfd)
        except OSError as exc:
            st = _lstat_at(dfd, name)
            err = _refusal(folder, name, st) if st is not None else None
            raise (
                err or UnsafePathError(f"refusing to write {folder.name}/{name}: {exc.strerror}")
            ) from exc
        st = os.fstat(fd)
        if (err := _refusal(folder, name, st)) is not None:
            os.close(fd)
            raise err
        os.set_blocking(fd, True)
        return fd


def append_bytes(folder: Path, name: str, data: bytes) -> None:
    """Append ``data`` with one write and fsync it (see ``open_append`` for what is refused)."""
    fd = open_append(folder, name)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def check_plain(path: Path) -> None:
    """Raise UnsafePathError unless ``path`` is absent or a plain file with one link in a link-free
    folder."""
    check_replaceable(path.parent, [path.name])


def new_dir(folder: Path, name: str) -> Path:
    """A fresh private directory inside ``folder`` (``mkdtemp``: never an existing entry)."""
    check_folder(folder)
    return Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=folder))


def move_dir_into_place(tmp_dir: Path, folder: Path, name: str, replace: bool) -> Path:
    """Rename ``tmp_dir`` (made by ``new_dir``) to ``folder/name``; an existing directory only if
    ``replace``.

    A link or file at ``name`` is refused; the moved directory is checked to be the one renamed.
    """
    _check_name(name)
    with _open_folder(folder) as dfd:
        tfd = os.open(tmp_dir.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
        try:
            ino = os.fstat(tfd).st_ino
            os.fchmod(tfd, 0o755)
        finally:
            os.close(tfd)
        st = _lstat_at(dfd, name)
        if st is not None:
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
                raise UnsafePathError(
                    f"refusing to replace {folder.name}/{name}: it is a link or not a directory"
                )
            if not replace:
                raise UnsafePathError(f"{folder.name}/{name} already exists")
            shutil.rmtree(folder / name)  # rmtree never follows links inside
        os.rename(tmp_dir.name, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        landed = _lstat_at(dfd, name)
        if landed is None or landed.st_ino != ino:
            raise UnsafePathError(f"the export {folder.name}/{name} did not land where intended")
    return folder / name


def _unlink_quiet(dir_fd: int, name: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
