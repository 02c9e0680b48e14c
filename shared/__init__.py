"""The runtime every memos service shares.

Small private-ish modules behind this curated surface:

- :mod:`shared.errors`    one error model (domain side, free of gRPC)
- :mod:`shared.grpc_errors` mapping of that model to ``google.rpc.Status``
- :mod:`shared.settings`  typed settings, ``MEMOS_`` prefix
- :mod:`shared.server`    grpc.aio server bootstrap (health, reflection, shutdown)
- :mod:`shared.interceptors` request id, access log, tracing, error translation
- :mod:`shared.channels`  client channels with deadlines and retries
- :mod:`shared.telemetry` OpenTelemetry setup and propagation
"""
