"""Hadoop's own FsShell (``hadoop fs ...``) from the jars pyspark ships, against a WebHDFS URI."""

from __future__ import annotations

import hashlib
import os
import tempfile
import subprocess
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from tests.support.java import classpath, java_home, quiet_jvm_options


def fs_shell(
    default_fs: str, *args: str, user: str | None = None, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``hadoop fs <args>`` with ``fs.defaultFS=default_fs`` (``webhdfs://host:port``) in its
    ``core-site.xml`` (a configuration dir first on the classpath, as ``bin/hadoop`` does with
    HADOOP_CONF_DIR); ``user`` becomes the client's user (``HADOOP_USER_NAME``, sent as ``user.name``)."""
    conf_dir = _conf_dir(default_fs)
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


def _conf_dir(default_fs: str) -> Path:
    """A configuration dir (cached in the temp dir, one per file system) with its core-site.xml."""
    digest = hashlib.sha256(default_fs.encode()).hexdigest()[:16]
    directory = Path(tempfile.gettempdir()) / "cortex-rm-java" / f"fsshell-conf-{digest}"
    site = directory / "core-site.xml"
    if not site.exists():
        directory.mkdir(parents=True, exist_ok=True)
        site.write_text(
            '<?xml version="1.0"?>\n<configuration>\n'
            f"  <property><name>fs.defaultFS</name><value>{escape(default_fs)}</value></property>\n"
            "</configuration>\n"
        )
    return directory
