"""Model backends of actmem: one interface, the transformers and vLLM implementations."""
