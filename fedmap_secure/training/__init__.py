"""Local training adapters (the only place torch optimisers and Opacus are driven)."""
