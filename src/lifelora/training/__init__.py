"""The one training loop every model trains through: LLM adapters and the lens alike."""
