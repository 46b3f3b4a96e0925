"""`report --publish --images s3://...`: the plots go to the user's bucket (a real moto S3
server on loopback) instead of the assets branch, and the comment links them there."""

from __future__ import annotations

import json
from pathlib import Path

import boto3

from gha_mlops.testing.github_emulator import GitHubEmulator
from tests.integration.test_cli_report import _cli, _ok, ws  # noqa: F401 - fixture
from tests.integration.test_remotes import aws_env, bucket, moto_endpoint  # noqa: F401

pytest_plugins = ["tests.integration.github_fixtures"]


def test_plots_go_to_the_bucket_and_the_comment_links_them(
        ws: Path, github: GitHubEmulator, bucket: str, moto_endpoint: str,  # noqa: F811
        tmp_path: Path) -> None:
    repo = github.repo("octo/demo")
    sha = repo.commit({"a": "b"}, branch="feature")
    number = repo.create_pull(head="feature")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": number, "head": {"sha": sha}}}))
    _ok(_cli(ws, "run", "--set", "train.acc=0.96"))
    env = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request",
           "GITHUB_EVENT_PATH": str(event), "GITHUB_REPOSITORY": "octo/demo",
           "GITHUB_API_URL": github.url, "GITHUB_SERVER_URL": github.root_url,
           "GITHUB_TOKEN": github.token, "AWS_ENDPOINT_URL": moto_endpoint}
    _ok(_cli(ws, "report", "--baseline", "latest~1", "--publish", "--report-id", "pr",
             "--images", f"s3://{bucket}/reports", env=env))
    client = boto3.client("s3", endpoint_url=moto_endpoint)
    try:
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
        pngs = [client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys]
    finally:
        client.close()
    assert len(keys) == 3 and all(k.startswith("reports/pr/") for k in keys)
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in pngs)
    [comment] = github.issue_comments("octo/demo", number)
    for key in keys:
        # Readers need the bucket (or --images-base-url) to be public: S3 decides that.
        assert f"{moto_endpoint}/{bucket}/{key}" in comment.body
    assert "/raw/" not in comment.body  # nothing went to the assets branch
    assert not any(r.path.endswith("/git/blobs") for r in github.requests)
