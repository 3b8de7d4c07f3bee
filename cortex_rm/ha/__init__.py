"""High availability of the ResourceManager: its state replicated among the RM-eligible nodes (issue 13)."""
