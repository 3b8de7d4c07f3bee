"""Cortex RM: a Hadoop YARN-compatible resource manager for a volunteer cluster."""

__version__ = "0.1.0"
