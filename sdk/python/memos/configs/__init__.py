"""MemOS-compatible configuration classes (the subset memos implements)."""
