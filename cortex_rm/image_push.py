"""``cortex-rm image push``: put a runtime image's archive where the nodes fetch it.

The RM's configuration names the image by the SHA-256 of its archive
(``[resourcemanager] runtime_image``); nodes read ``/cortex/images/<sha256>.tar.zst``
from the cluster's file system (``roles/runtime_image_fetcher.py``), check the hash and
unpack it.  The push uploads the archive there once, as the file system's superuser (the
user the RM runs as), world-readable in a directory only the superuser may write: nobody
else can put another file under an image's name, and a node would refuse one whose hash
is not its name anyway.
"""

from __future__ import annotations

from pathlib import Path

from cortex_rm.container.runtime_image import RUNTIME_IMAGE_DIR, runtime_image_path, sha256_of_file
from cortex_rm.webhdfs_client import Say, WebHdfs, WebHdfsError, upload_when_ready
from cortex_rm.yarn.addresses import HostPort


def push_image(namenode: HostPort, archive: Path, delegation: str, say: Say, sha256: str | None = None) -> str:
    """Upload ``archive`` (once) to ``/cortex/images/<sha256>.tar.zst``; that path.  ``sha256``,
    when the caller knows it, spares hashing the archive again."""
    digest = sha256 or sha256_of_file(archive)
    path = runtime_image_path(digest)
    fs = WebHdfs(namenode, delegation)
    size = archive.stat().st_size
    if fs.length(path) == size:
        say(f"the runtime image {digest[:12]} is already in the file system: {path}")
        return path
    try:
        fs.mkdirs(RUNTIME_IMAGE_DIR, "755")
    except WebHdfsError as e:
        raise WebHdfsError(
            f"{e}; images go into {RUNTIME_IMAGE_DIR} with the admin's credential (the user the ResourceManager runs as; --credential)", e.status
        ) from None
    say(f"uploading the runtime image {digest[:12]} ({size / 1e6:.0f} MB) to {path} ...")
    upload_when_ready(fs, path, archive, "644", say)
    return path
