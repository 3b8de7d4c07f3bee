"""The file system's errors, each naming the Java exception Hadoop's client throws for it.

A WebHDFS client turns the ``RemoteException`` JSON into an instance of
``java_class`` (falling back to ``IOException``), so the class names below are
what FsShell and Spark print.  ``http_status`` is the status WebHDFS answers with.
"""

from __future__ import annotations

from cortex_rm.yarn.errors import YarnError


class FsError(YarnError):
    """Base of every file system error; ``str(error)`` is the message the client shows."""

    java_class: str = "java.io.IOException"
    http_status: int = 500

    @property
    def simple_name(self) -> str:
        """The Java class's simple name (WebHDFS's ``exception`` field; a nested class's own name)."""
        return self.java_class.rsplit(".", 1)[-1].rsplit("$", 1)[-1]


class FileNotFound(FsError):
    java_class = "java.io.FileNotFoundException"
    http_status = 404


class FileAlreadyExists(FsError):
    java_class = "org.apache.hadoop.fs.FileAlreadyExistsException"
    http_status = 403


class AccessControl(FsError):
    java_class = "org.apache.hadoop.security.AccessControlException"
    http_status = 403


class ParentNotDirectory(FsError):
    java_class = "org.apache.hadoop.fs.ParentNotDirectoryException"
    http_status = 403


class PathIsNotEmptyDirectory(FsError):
    java_class = "org.apache.hadoop.fs.PathIsNotEmptyDirectoryException"
    http_status = 403


class InvalidPath(FsError):
    """A path with ``..``, ``.``, an empty component, NUL or ``:`` in a name, or not absolute."""

    java_class = "org.apache.hadoop.fs.InvalidPathException"
    http_status = 400


class IllegalArgument(FsError):
    """A bad parameter: an unknown op, a negative offset, a permission that is not octal..."""

    java_class = "java.lang.IllegalArgumentException"
    http_status = 400


class InvalidToken(FsError):
    """A redirect's or a block transfer's token, or a user's ``delegation`` token, is forged,
    expired, revoked or for something else."""

    java_class = "org.apache.hadoop.security.token.SecretManager$InvalidToken"
    http_status = 403


class NodeNotReady(FsError):
    """A node that has just started and has not yet received the NameNode's keys: the client retries."""

    java_class = "org.apache.hadoop.ipc.RetriableException"
    http_status = 503


class CorruptReplica(FsError):
    """A block replica's data does not match its checksums (or is shorter than recorded)."""

    java_class = "org.apache.hadoop.fs.ChecksumException"
    http_status = 500


class MissingBlock(FsError):
    """No live node holds a readable replica of a block the read needs."""

    java_class = "org.apache.hadoop.hdfs.BlockMissingException"
    http_status = 500


class NotEnoughDataNodes(FsError):
    """No node can take a write now (none registered, or all full)."""

    java_class = "java.io.IOException"
    http_status = 503


def _all_kinds() -> dict[str, type[FsError]]:
    kinds: dict[str, type[FsError]] = {}
    pending: list[type[FsError]] = [FsError]
    while pending:
        kind = pending.pop()
        kinds.setdefault(kind.java_class, kind)
        pending.extend(kind.__subclasses__())
    return kinds


def from_java_class(java_class: str, message: str) -> FsError:
    """The error a peer reported by its Java class name (the NameNode's refusal, seen by a node)."""
    kind = _all_kinds().get(java_class, FsError)
    error = kind(message)
    error.java_class = java_class
    return error
