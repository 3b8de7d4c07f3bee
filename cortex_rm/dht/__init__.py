"""The ring: Chord membership, failure detection and the replicated key space (issue 4)."""
