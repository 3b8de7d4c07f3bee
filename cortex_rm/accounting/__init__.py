"""Uptime accounting: intervals, attestations, ledger and payouts (a later issue)."""
