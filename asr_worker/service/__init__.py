"""The ASR worker's service shell: gRPC :2233, HTTP health/metrics :9090, Redis registry, drain.

Modules, one job each: ``settings`` (env -> ``WorkerSettings``), ``app`` (wiring, startup order,
signals: ``serve``/``run_worker``/``WorkerApp``), ``grpc_service`` (the ``AsrWorker`` servicer),
``grpc_errors`` (exception -> status, once), ``admission`` (capacity + waiting line), ``lifecycle``
(loading/ready/draining), ``pcm_stream`` (live PCM -> 16 kHz float32), ``http_server`` (``/health``,
``/metrics``), ``metrics`` (Prometheus families) and ``registry`` (the Redis key layout for routing).
The engine is reached only through ``asr_worker.engine.types.Engine``.
"""
