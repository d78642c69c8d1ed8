"""One streaming, hash-checking downloader for everything facebench fetches (ICT-FaceKit files,
Ramon et al.'s annotations): pinned sha256, written through a temporary file, so a failed or
tampered download never leaves a file that looks complete."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from facebench.atomic import atomic_path
from facebench.errors import FacebenchError, InputFileError


class DownloadHashError(InputFileError):
    """A downloaded file whose sha256 is not the pinned one (the file is discarded)."""


def download(url: str, target: str | Path, expected_sha256: str | None) -> str:
    """Stream ``url`` to ``target`` atomically; check ``expected_sha256`` (None: no check).

    Returns:
        the sha256 hex digest of what was downloaded.

    Raises:
        FacebenchError: the download failed (network, HTTP, file system).
        DownloadHashError: the bytes do not match ``expected_sha256``; ``target`` is not written.
    """
    digest = hashlib.sha256()
    with atomic_path(Path(target)) as tmp, open(tmp, "wb") as out:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            raise FacebenchError(f"cannot download {url}: {reason}") from None
        got = digest.hexdigest()
        if expected_sha256 is not None and got != expected_sha256:
            raise DownloadHashError(url, f"sha256 {got} does not match the pinned {expected_sha256}; file discarded")
    return got
