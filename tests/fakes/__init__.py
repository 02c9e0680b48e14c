"""Fakes of external model endpoints only, speaking the real OpenAI wire protocol on loopback."""
