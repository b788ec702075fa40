"""Simulation driver, reports and reference runs (may use torch, the clock and files)."""
