"""Click-through on an LLM: ReLLa prompts, P(yes) scoring, candidate ranking, and the jobs that build,
fit and evaluate an adapted model."""
