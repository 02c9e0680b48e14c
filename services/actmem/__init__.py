"""actmem: KV-cache activation memory, co-located with the model server."""
