"""Deterministic simulation of a pair's decision cores (run: make simulate)."""
