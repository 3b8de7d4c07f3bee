__all__ = ['ttypes', 'constants', 'NodeTracker', 'RingService']
