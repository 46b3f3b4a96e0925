"""The runner autoscaler: ephemeral self-hosted runners brought up when jobs that need them
are queued, and removed when they are done (``gha-mlops runners serve``).

Layers: ``config`` (runners.yaml), ``intake`` (the webhook endpoint), ``state`` (SQLite),
``policy`` (a pure function from what is to what to do), ``scaler`` (applies it through a
:class:`~gha_mlops.runners.backends.base.RunnerBackend` and the GitHub
:class:`~gha_mlops.github.port.RunnersPort`), ``backends/`` (Docker hosts; cloud next).
"""
