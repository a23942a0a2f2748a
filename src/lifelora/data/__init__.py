"""Data: raw sources → canonical tables → prepared samples with per-user histories."""
