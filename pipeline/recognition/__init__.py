"""Paid recognition at run time: provider adapters over HTTP, budget, ledger and cache, and the
stage that turns requests into now-playing records."""
