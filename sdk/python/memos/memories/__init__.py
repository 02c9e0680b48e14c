"""MemOS-compatible memory classes backed by memos services."""
