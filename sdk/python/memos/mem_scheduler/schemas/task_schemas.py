"""Labels of the scheduler's built-in task kinds (MemOS's constants and values)."""

from __future__ import annotations

QUERY_TASK_LABEL = "query"
ANSWER_TASK_LABEL = "answer"
ADD_TASK_LABEL = "add"
MEM_READ_TASK_LABEL = "mem_read"
MEM_ORGANIZE_TASK_LABEL = "mem_organize"
MEM_UPDATE_TASK_LABEL = "mem_update"
MEM_ARCHIVE_TASK_LABEL = "mem_archive"
PREF_ADD_TASK_LABEL = "pref_add"

BUILTIN_TASK_LABELS = (
    QUERY_TASK_LABEL,
    ANSWER_TASK_LABEL,
    ADD_TASK_LABEL,
    MEM_READ_TASK_LABEL,
    MEM_ORGANIZE_TASK_LABEL,
    MEM_UPDATE_TASK_LABEL,
    MEM_ARCHIVE_TASK_LABEL,
    PREF_ADD_TASK_LABEL,
)
