"""Metrics under the names the field uses: click-through (`ctr`); ranking arrives with next-item."""
