"""The node agent: container runtime, localization and launch (issue 3)."""
