"""Store adapters behind small interfaces (see graph.py and vector.py)."""
