"""Deployment: a packaged, registered model rolled out to an environment's Docker hosts
behind an nginx router, step by step, gated by readiness, golden requests and the new
version's own metrics, rolled back to the previous image digest on any failure
(docs/deploy.md).

Modules:

- :mod:`.model`: the typed state of an environment as read from its hosts (releases, slots,
  the router's state record, the lock).
- :mod:`.ports`: :class:`~.ports.DeployHost`, what a rollout needs of one host; the Docker
  adapter (:mod:`.docker_hosts`) implements it.
- :mod:`.router`: the nginx configuration of a router, with the state record it carries.
- :mod:`.probe`, :mod:`.gates`, :mod:`.golden`: talking to a backend (readiness, metrics,
  inference), judging gates on metrics windows, golden requests.
- :mod:`.rollout`: the use cases (deploy, status, rollback).
- :mod:`.kserve`: KServe manifests (rendering only).
"""

from __future__ import annotations
