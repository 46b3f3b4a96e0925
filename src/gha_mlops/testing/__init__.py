"""Test doubles shipped with gha-mlops, for this project's tests and for users' own.

Nothing here is imported by the product at run time. :mod:`.fakes` has an in-memory fake of
every port (GitHub, Actions, object store, the runner autoscaler's GitHub and backend), to
hand to the services or to :func:`gha_mlops.bootstrap.build`; ``github_emulator`` is a
stateful GitHub REST API server that validates every exchange against GitHub's OpenAPI
description.
"""
