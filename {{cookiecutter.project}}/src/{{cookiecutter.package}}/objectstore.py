"""Files to and from object storage through fsspec: one URL -> (filesystem, root), and a copy up
that a reader never sees half of.

Any fsspec URL works: `s3://` through s3fs (the library dvc-s3 uses, with the same credentials:
the pod's role, or AWS_* / AWS_ENDPOINT_URL in the environment), a local path for tests and
shared volumes. Used by `capture ship|fetch` and by the eval's shared response cache.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from .errors import UserError, clip


def open_url(url: str, needs: str = "fsspec: pip install -e '.[serve]'") -> tuple[Any, str]:
    """(fsspec filesystem, root path) for `url`; a UserError naming what is missing."""
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise UserError(f"{clip(url, 80)}: needs {needs}") from None
    try:
        fs, root = url_to_fs(url)
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its package (s3fs) not installed
        raise UserError(f"{clip(url, 80)}: cannot open ({clip(str(exc), 160)})") from None
    return fs, str(root).rstrip("/")


def is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def put(fs: Any, source: Path, target: str) -> int:
    """Upload `source` to `target`; the size that arrived there."""
    fs.makedirs(str(PurePosixPath(target).parent), exist_ok=True)
    # Local targets: write aside and rename, so a reader never sees half a file. Object stores:
    # one PUT is already all or nothing.
    if is_local(fs):
        partial = f"{target}.part"
        fs.put_file(str(source), partial)
        fs.mv(partial, target)
    else:
        fs.put_file(str(source), target)
    return int(fs.size(target))


def get(fs: Any, remote: str, local: Path) -> None:
    """Download `remote` to `local`, written aside and renamed: a reader never sees half a file."""
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.with_name(local.name + ".part")
    fs.get_file(remote, str(partial))
    partial.replace(local)
