"""gateway: the public API (add, search, cubes) with access control and multi-cube fan-out."""
