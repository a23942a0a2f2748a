"""The task-free LLM layer: backbone loading, the chat wrapper, item text and item embeddings."""
