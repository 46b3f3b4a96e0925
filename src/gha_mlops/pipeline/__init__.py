"""The pipeline service: signatures, the engine (decide, inputs, execute, schedule, assemble),
the run cache, writing run records, reproduce, and the roots of garbage collection.

Hashing and the object store it stands on live in :mod:`gha_mlops.store`; reading run
records in :mod:`gha_mlops.runs`.
"""
