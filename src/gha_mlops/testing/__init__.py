"""Test doubles shipped with gha-mlops, for this project's tests and for users' own.

Nothing here is imported by the product at run time. ``github_emulator`` is a stateful
GitHub REST API server that validates every exchange against GitHub's OpenAPI description.
"""
