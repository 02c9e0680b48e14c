"""MemOS's ``memos.mem_scheduler`` names, served by the scheduler service (see :mod:`.facade`)."""
