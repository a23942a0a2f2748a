"""Continual learning over time periods (PESO and its baselines): the stream of periods, the strategies
that carry an adapter from one period to the next, and the engine that runs them resumably."""
