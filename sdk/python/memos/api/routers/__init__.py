"""MemOS-compatible routers."""
