"""Recommendation tasks on top of the task-free LLM layer: click-through (`ctr`); next-item follows."""
