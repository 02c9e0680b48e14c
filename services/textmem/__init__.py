"""textmem: textual memory of many cubes (items, sources, relations, vectors, hybrid retrieval)."""
