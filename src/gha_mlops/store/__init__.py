"""The content store: the bottom layer every service stands on.

- :mod:`~gha_mlops.store.hashing`: sha256 of files and trees, the stat cache that skips
  re-hashing unchanged files, and the digest and relative-path checks every digest or path
  from outside goes through.
- :mod:`~gha_mlops.store.objects`: the content-addressed object store under
  ``.gha-mlops/cache/objects`` (files by sha256, trees by the hash of their manifest) and the
  typed, validated tree manifest.
- :mod:`~gha_mlops.store.links`: how bytes move between the store and a workspace (reflink,
  hard link or copy).
- :mod:`~gha_mlops.store.lock`: the workspace lock (one writer of a workspace's state at a time).
- :mod:`~gha_mlops.store.gc`: removal of the objects no *root* names. The roots come from the
  layers above (dataset pointers, the run cache, run records): the store knows none of them.

Nothing here imports a service (pipeline, data, reporting, runners) or the CLI.
"""
