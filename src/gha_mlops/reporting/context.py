"""The facts of the GitHub Actions environment the reports need, as one typed value.

The CLI reads the process environment once (:func:`gha_mlops.bootstrap.github_context`) and
hands this value to the services, which never read ``os.environ`` themselves: a test builds the value it
wants instead of changing the process's environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class Echo(Protocol):
    """Prints ``message`` and, unless ``nl`` is false, a line break (``click.echo``)."""

    def __call__(self, message: str, *, nl: bool = True) -> None: ...


@dataclass(frozen=True)
class GitHubContext:
    """Where the job runs and what triggered it (the ``GITHUB_*`` variables); every field is
    empty or ``None`` outside GitHub Actions."""

    active: bool = False  # GITHUB_ACTIONS=true
    repository: str = ""  # owner/name
    server_url: str | None = None  # as set; :attr:`server` gives the default
    api_url: str = "https://api.github.com"
    run_id: str | None = None
    event_name: str = ""
    event_path: str | None = None
    sha: str = ""
    step_summary: Path | None = None
    token: str | None = field(default=None, repr=False)  # GITHUB_TOKEN, else GH_TOKEN
    s3_endpoint: str | None = None  # AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL

    @property
    def server(self) -> str:
        """The GitHub server's URL (``https://github.com`` unless set)."""
        return self.server_url or "https://github.com"

    def event_environ(self) -> dict[str, str]:
        """The variables that name the event, as :func:`~gha_mlops.reporting.publish.
        target_from_event` and :func:`~gha_mlops.reporting.baseline.load_event` read them."""
        out = {"GITHUB_REPOSITORY": self.repository, "GITHUB_EVENT_NAME": self.event_name,
               "GITHUB_SHA": self.sha}
        if self.event_path:
            out["GITHUB_EVENT_PATH"] = self.event_path
        return out

    def run_url(self, repo: str | None = None) -> str | None:
        """The workflow run's page in ``repo`` (default: this repository), when known."""
        repo = repo or self.repository
        if not self.run_id or not repo:
            return None
        return f"{self.server}/{repo}/actions/runs/{self.run_id}"
