"""File format adapters (see base.py)."""
