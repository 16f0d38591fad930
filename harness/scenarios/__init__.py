"""Scenario runs: one selftest invocation, its KTAP and assertion output, the run matrix, THP actions."""
