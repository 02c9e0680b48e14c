"""The scheduler service: a durable, labelled task queue with remote handlers."""
