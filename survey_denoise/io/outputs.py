"""Output paths: where a command may write, and how it replaces what is there.

Every command and the pipeline runner go through this module, so that one
set of rules protects the user's data:

* an output may not be, contain or sit inside one of the command's inputs
  (not even with ``--overwrite``: the input would be deleted before it is read);
* an existing output is refused unless the user asked to ``--overwrite`` it
  (or to ``--resume`` the store it is, or the files derived from that store);
* a file or folder is written under a hidden staging name beside its final
  place (``.NAME.partial/NAME``) and renamed into place only once complete,
  so a crash leaves the old output, never half a new one.  A staging folder
  left by a killed run is removed by the next run that writes the same output.

See ``docs/guarantees.md`` for what each option can and cannot lose.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path


class OutputError(FileExistsError):
    """An output path that would destroy data: it overlaps an input, or exists already."""


def staging(path: str | Path) -> Path:
    """The hidden folder beside ``path`` in which its replacement is written."""
    path = Path(path)
    return path.parent / f".{path.name}.partial"


def check_outputs(outputs: Iterable[str | Path], inputs: Iterable[str | Path] = (), *,
                  overwrite: bool = False, resume: bool = False,
                  resumable: Iterable[str | Path] = ()) -> None:
    """Refuse output paths that would lose data; call before any work starts.

    Parameters
    ----------
    outputs : iterable of path
        Every file or folder the command writes.
    inputs : iterable of path
        Every file or folder it reads.
    overwrite : bool
        Existing outputs may be replaced (once their replacements are complete).
    resume : bool
        The command finishes an interrupted run: existing ``resumable`` stores
        are continued, and the other outputs (files derived from those stores)
        may be rewritten if at least one of those stores exists.
    resumable : iterable of path
        The outputs (Zarr stores) that ``resume`` continues.

    Raises
    ------
    OutputError
        Naming the path and what to do.
    """
    outputs = [Path(p) for p in outputs if p is not None]
    check_overlap(outputs, inputs)
    resumable = {_key(p) for p in resumable}
    resuming = resume and any(_exists(p) for p in outputs if _key(p) in resumable)
    for out in outputs:
        if not _exists(out) or overwrite or resuming:
            continue
        if _key(out) in resumable:
            raise OutputError(f"{out} exists; pass --resume to finish it or --overwrite to replace it")
        raise OutputError(f"{out} exists; pass --overwrite to replace it")


def check_overlap(outputs: Iterable[str | Path], inputs: Iterable[str | Path]) -> None:
    """Refuse an output that is, contains or sits inside an input, or another output.

    Raises
    ------
    OutputError
        Naming both paths.
    """
    outputs = [Path(p) for p in outputs if p is not None]
    inputs = [Path(p) for p in inputs if p is not None]
    for out in outputs:
        for src in inputs:
            relation = _overlap(out, src)
            if relation:
                raise OutputError(f"{out}: the output {relation} the input {src}; write it "
                                  "elsewhere (--overwrite never replaces a command's input)")
    for i, out in enumerate(outputs):
        for other in outputs[i + 1:]:
            relation = _overlap(out, other)
            if relation:
                raise OutputError(f"{out}: the output {relation} the output {other}; "
                                  "give them separate paths")


@contextlib.contextmanager
def replacing(*paths: str | Path) -> Iterator[list[Path]]:
    """Write new versions of ``paths`` under staging names; install them all on success.

    Missing parent folders are created.

    Yields one staging path per output (same file name, inside
    :func:`staging` of the first output in that folder).  When the block
    ends normally, each staged path that exists is renamed over its final
    path (a folder replaces the old folder); on an exception the staged
    outputs are deleted and the old ones are untouched.

    Examples
    --------
    >>> with replacing(out) as (tmp,):          # doctest: +SKIP
    ...     frame.to_csv(tmp)
    """
    finals = [Path(p) for p in paths]
    stages: dict[Path, Path] = {}
    for path in finals:
        stages.setdefault(path.parent, staging(path))
    for folder in stages.values():
        shutil.rmtree(folder, ignore_errors=True)  # left by a killed run
        folder.mkdir(parents=True)
    staged = [stages[p.parent] / p.name for p in finals]
    try:
        yield staged
        for tmp, path in zip(staged, finals, strict=True):
            if tmp.exists():
                install(tmp, path)
    finally:
        for folder in stages.values():
            shutil.rmtree(folder, ignore_errors=True)


def install(staged: str | Path, path: str | Path) -> None:
    """Move the complete ``staged`` file or folder to ``path``, replacing what is there.

    A file replaces a file atomically (``os.replace``).  A folder cannot
    replace a non-empty folder in one step: the old one is first renamed to
    ``.NAME.old`` beside it and deleted after the new one is in place, so
    between the two renames (microseconds) ``path`` is briefly absent.
    """
    staged, path = Path(staged), Path(path)
    if staged.is_dir() and path.is_dir() and not path.is_symlink():
        old = path.parent / f".{path.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        staged.rename(path)
        shutil.rmtree(old, ignore_errors=True)
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif staged.is_dir() and _exists(path):
        path.unlink()
    os.replace(staged, path)


def _overlap(out: Path, src: Path) -> str:
    a, b = _key(out), _key(src)
    if a == b:
        return "is"
    if a in b.parents:
        return "contains"
    if b in a.parents:
        return "sits inside"
    return ""


def _key(path: str | Path) -> Path:
    # Resolved, so that "a/../b", symbolic links and relative paths compare equal.
    return Path(os.path.realpath(Path(path).expanduser()))


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()

