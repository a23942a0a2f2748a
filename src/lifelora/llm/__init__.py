"""The language-model side: backbone loading, prompts, CTR scoring and candidate ranking."""
