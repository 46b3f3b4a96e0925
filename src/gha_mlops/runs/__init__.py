"""Run records: the typed record (:mod:`~gha_mlops.runs.record`), where a workspace keeps its
runs, and how a ``RUN`` reference resolves.

This package sits above the content store and below the services: the pipeline writes
records, every other service reads them through it.
"""
