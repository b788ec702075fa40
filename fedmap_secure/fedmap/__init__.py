"""The FedMAP algorithm: ICNN prior, MAP objective, contribution score, server update from sums."""
