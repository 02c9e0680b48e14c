"""Activation (KV-cache) memory, served by actmem."""
