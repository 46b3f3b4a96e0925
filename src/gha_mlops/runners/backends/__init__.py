"""Where runners run: the :class:`RunnerBackend` port and its adapters."""
