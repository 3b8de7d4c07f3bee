"""The NodeManager's fetcher for ``webhdfs://`` resources: the cluster's own file system.

A container's resource named ``webhdfs://<any authority>/<path>`` (what
spark-submit stages with ``fs.defaultFS=webhdfs://...``) is read from the
NameNode this node reports to, over its tracker connection, never from the
URL's host: a launch context cannot make a node fetch from an address of its
choosing.  The node shows the container's token (the RM signed it for this node
and names the application's user); the NameNode checks READ as that user, or,
for a PUBLIC resource, that everyone may read the file, and answers with the
file's length and time (checked against the resource, as YARN's FSDownload
does) and a read ticket.  The bytes come block by block from this node's own
replicas or from their holders, each 64 KiB chunk checked against its CRC.

Blocking: runs on the localizer's worker threads, calling into the reactor
for the tracker's answers.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.threads import blockingCallFromThread

from cortex_rm.container.local_resources import LocalizationError, LocalResource, Visibility
from cortex_rm.container.resource_files import Requester, changed_on_source
from cortex_rm.fs.errors import FsError
from cortex_rm.internal.block_codec import BlockLocation, LocalizationSource
from cortex_rm.roles.data_node import DataNodeRole
from cortex_rm.yarn_api.webhdfs.block_work import read_range

SCHEMES = ("webhdfs",)


class FileSystemFetcher:
    """Fetches ``webhdfs:`` resources through ``data_node`` (see the module docstring)."""

    def __init__(self, data_node: DataNodeRole) -> None:
        self.data_node = data_node

    def fetch(self, resource: LocalResource, dest: Path, requester: Requester) -> None:
        url = resource.url
        token = requester.container_token
        if token is None:
            raise LocalizationError(f"Resource {url}: the container has no token to read the file system with")
        reactor = self.data_node.reactor
        public = resource.visibility is Visibility.PUBLIC
        try:
            source: LocalizationSource = blockingCallFromThread(
                reactor, self.data_node.open_for_localization, token, url.file, public  # type: ignore[arg-type]
            )
            if source.modification_time_ms != resource.timestamp_ms:
                raise changed_on_source(url, resource.timestamp_ms, source.modification_time_ms)
            if resource.size >= 0 and source.length != resource.size:
                raise LocalizationError(
                    f"Resource {url} changed on src filesystem (expected size {resource.size}, was {source.length})"
                )
            located: tuple[int, tuple[BlockLocation, ...]] = blockingCallFromThread(
                reactor, self.data_node.locate, source.ticket, 0, -1  # type: ignore[arg-type]
            )
            length, blocks = located
            written = 0
            with dest.open("wb") as f:
                for piece in read_range(self.data_node, blocks, 0, length):
                    f.write(piece)
                    written += len(piece)
        except LocalizationError:
            raise
        except FsError as e:
            raise LocalizationError(f"Resource {url} cannot be read: {e.simple_name}: {e}") from None
        except Exception as e:  # noqa: BLE001 - the tracker connection or a holder failed: the container's diagnostics say so
            raise LocalizationError(f"Resource {url} cannot be fetched from the cluster's file system: {e}") from None
        if written != length:
            raise LocalizationError(f"Resource {url}: read {written} of {length} bytes")
