"""Shared pytest setup: the JDK the Hadoop-client tests run (``$JAVA_HOME``, else the one on PATH)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def _default_java_home() -> str:
    javac = shutil.which("javac")
    if javac:
        return str(Path(javac).resolve().parents[1])
    return "/usr/lib/jvm/java-17-openjdk-amd64"


os.environ.setdefault("JAVA_HOME", _default_java_home())
