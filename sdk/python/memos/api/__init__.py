"""MemOS-compatible API facade: ``memos.api.product_models`` and ``memos.api.routers.server_router``.

Code written for MemOS's server API runs unchanged against memos's gRPC services.
"""
