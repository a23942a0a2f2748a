"""Serving: answer requests with the active adapter version, record feedback, update and hot-swap versions."""
