"""Owner-only files: everything a server or worker writes (database, blobs, job folders, logs,
keys) is readable by the user that runs it and nobody else.

`owner_only(settings)` sets the process umask to 0o077 (inherited by the job runners the worker
starts) and takes group/other permissions off what openft already wrote in the data folder and
the model cache (files a version before this one wrote 0644), leaving anything else in those
folders alone. Knows nothing about what the files hold.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from openft.config import DataLayout, Settings

UMASK = 0o077
log = logging.getLogger("openft.store")


def owner_only(settings: Settings) -> int:
    """Umask 0o077 for this process and its children; tighten existing files. Returns how many
    files or folders had their mode changed."""
    os.umask(UMASK)
    data = Path(settings.data_dir).resolve()
    changed = _tighten(data) if data.exists() else 0
    # Only what openft writes there: the data folder may be shared with the operator's own files.
    layout = DataLayout(data)
    paths = list(layout.owned())
    paths += list(data.glob(layout.database.name + "*")) + list(data.glob(f".{layout.admin_key.name}.*"))
    for path in paths:
        changed += _tighten(path)
        if path.is_dir() and not path.is_symlink():
            changed += _tighten_tree(path)
    cache = settings.resolved_model_cache_dir()
    if cache.exists():
        changed += _tighten(cache) + _tighten_tree(cache)
    db_file = _sqlite_file(settings)  # a database outside the data folder: its own files only
    if db_file is not None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            changed += _tighten(db_file.with_name(db_file.name + suffix))
    if changed:
        log.info("made %d existing file(s) in the data folder owner-only", changed)
    return changed


def _tighten_tree(root: Path) -> int:
    changed = 0
    for folder, dirs, names in os.walk(root):  # does not follow symlinks elsewhere
        for name in dirs + names:
            changed += _tighten(Path(folder) / name)
    return changed


def _sqlite_file(settings: Settings) -> Path | None:
    url = settings.resolved_database_url()
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):]
    return Path(path).resolve() if path and path != ":memory:" else None


def _tighten(path: Path) -> int:
    try:
        st = path.lstat()
    except OSError:
        return 0
    if stat.S_ISLNK(st.st_mode) or not (st.st_mode & 0o077):
        return 0
    try:
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)
    except OSError as e:  # not ours (another user's file): say so, carry on
        log.warning("could not make %s owner-only: %s", path, e)
        return 0
    return 1
