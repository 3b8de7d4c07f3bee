"""The ResourceManager's decisions: cluster model, application lifecycle, state store."""
