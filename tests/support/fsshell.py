"""Hadoop's own FsShell (``hadoop fs ...``) from the jars pyspark ships, against a WebHDFS URI.

A Cortex file system believes no ``user.name``: the shell authenticates with a user's
token file (``hadoop.token.files`` in its ``core-site.xml``; ``tests/support/credentials.py``
issues them), as a client configured by ``cortex-rm client-config`` does."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from tests.support.java import classpath, java_home, quiet_jvm_options


def fs_shell(
    default_fs: str,
    *args: str,
    user: str | None = None,
    token_file: Path | None = None,
    timeout: float = 300,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``hadoop fs <args>`` with ``fs.defaultFS=default_fs`` (``webhdfs://host:port``) in its
    ``core-site.xml`` (a configuration dir first on the classpath, as ``bin/hadoop`` does with
    HADOOP_CONF_DIR).  ``token_file`` (a Hadoop token file whose WebHDFS token's service is the
    file system's ``ip:port``) is the credential the shell presents (``delegation=``): who it
    acts as.  ``user`` is the client's login name (``HADOOP_USER_NAME``), which proves nothing."""
    conf_dir = _conf_dir(default_fs, token_file)
    env = dict(os.environ, JAVA_HOME=str(java_home()), HADOOP_CONF_DIR=str(conf_dir))
    if user is not None:
        env["HADOOP_USER_NAME"] = user
    command: Sequence[str] = [
        str(java_home() / "bin" / "java"),
        *quiet_jvm_options(),
        "-cp",
        classpath(conf_dir),
        "org.apache.hadoop.fs.FsShell",
        *args,
    ]
    return subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def _conf_dir(default_fs: str, token_file: Path | None) -> Path:
    """A configuration dir (cached in the temp dir, one per file system and token file) with its
    core-site.xml.  The token file is named, not copied: its content is read at each start."""
    properties = {"fs.defaultFS": default_fs}
    if token_file is not None:
        properties["hadoop.token.files"] = str(token_file.resolve())
    text = (
        '<?xml version="1.0"?>\n<configuration>\n'
        + "".join(
            f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>\n" for k, v in properties.items()
        )
        + "</configuration>\n"
    )
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    directory = Path(tempfile.gettempdir()) / "cortex-rm-java" / f"fsshell-conf-{digest}"
    site = directory / "core-site.xml"
    if not site.exists():
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / f"core-site.xml.{os.getpid()}"
        partial.write_text(text)
        partial.replace(site)
    return directory
