"""ingest: turns raw input (text, files, images, tool calls and schemas) into memory candidates."""
