"""Federated datasets: bundled real data, a synthetic generator and site-folder CSVs."""
