"""Generative next-item recommendation: items as short integer codes (semantic IDs) an LLM decodes."""
