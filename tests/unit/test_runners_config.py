"""runners.yaml: a good file loads; each mistake is named by its key and line, with a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from gha_mlops.errors import ConfigError
from gha_mlops.runners.config import load_config, parse_bytes, parse_duration

GOOD = """\
id: box-1
github:
  org: octo
  repos: [octo/ml, octo/vision]
  app: {id: 42, private_key_file: app.pem, installation_id: 7}
webhook: {secret_env: HOOK_SECRET, listen: "0.0.0.0:9000", max_body: 256KiB}
state: /var/lib/gha-mlops/runners.db
reconcile_interval: 1m
backends:
  docker: {gpus: [0, 1, 2, 3], network: host}
pools:
  - name: a100
    labels: [gpu, A100]
    max: 4
    min_idle: 1
    gpus: 1
    cpus: 8
    memory: 32GiB
    image: ghcr.io/octo/runner:2.330.0
    idle_timeout: 10m
    max_lifetime: 6h
  - {name: cpu, labels: [big], max: 8, image: ghcr.io/octo/runner:2.330.0}
"""
ENV = {"HOOK_SECRET": "x" * 40}
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n"


def write(tmp: Path, text: str) -> Path:
    (tmp / "app.pem").write_text(PEM)
    path = tmp / "runners.yaml"
    path.write_text(text)
    return path


def error(tmp: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp, text), ENV if env is None else env)
    return info.value


def test_a_good_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), ENV)
    assert cfg.org == "octo" and cfg.repos == ("octo/ml", "octo/vision")
    assert cfg.auth.app_id == 42 and cfg.auth.installation_id == 7
    assert cfg.auth.private_key == PEM and cfg.auth.token is None
    assert cfg.webhook_secret == b"x" * 40
    assert (cfg.listen_host, cfg.listen_port, cfg.max_body) == ("0.0.0.0", 9000, 256 * 1024)
    assert cfg.reconcile_interval == 60.0
    a100, cpu = cfg.pools
    assert a100.labels == frozenset({"self-hosted", "linux", "x64", "gpu", "a100"})
    assert (a100.memory_mb, a100.cpus, a100.gpus, a100.min_idle) == (32 * 1024, 8.0, 1, 1)
    assert (a100.idle_timeout, a100.max_lifetime) == (600.0, 6 * 3600.0)
    assert cpu.register_timeout == 180.0 and cpu.idle_timeout == 300.0
    assert cfg.docker.gpus == ["0", "1", "2", "3"] and cfg.docker.network == "host"


@pytest.mark.parametrize(("edit", "message", "line"), [
    (("max: 4", "maks: 4"), "pools[0].maks: unknown key 'maks'", 14),
    (("max: 4\n", "max: 0\n"), "pools[0].max: must be at least 1, got an integer 0", 14),
    (("min_idle: 1", "min_idle: 9"), "pools[0].min_idle: min_idle (9) is more than max (4)", 15),
    (("gpus: 1", "gpus: 5"), "pools[0].gpus: each runner wants 5 GPU(s) but no host of the "
     "docker backend lists that many (at most 4)", 16),
    (("idle_timeout: 10m", "idle_timeout: soon"), "pools[0].idle_timeout: expected a duration",
     20),
    (("memory: 32GiB", "memory: lots"), "pools[0].memory: expected a size", 18),
    (("  org: octo\n", "  org: octo\n  repo: octo/ml\n"), "github: name exactly one scope", 2),
    (("    image: ghcr.io/octo/runner:2.330.0\n", ""), "pools[0]: a docker pool needs `image:`",
     12),
    (("{name: cpu,", "{name: a100,"), "pools[1].name: pool 'a100' is declared twice", 22),
    (("octo/vision", "other/vision"), "github.repos[1]: 'other/vision' is not a repository of "
     "'octo'", 4),
    (('"0.0.0.0:9000"', "nine-thousand"), "webhook.listen: 'nine-thousand' is not HOST:PORT", 6),
    (("id: box-1", "id: Box_1"), "id: 'Box_1' is not a valid id", 1),
])
def test_mistakes_are_named_with_their_line(tmp_path: Path, edit: tuple[str, str],
                                           message: str, line: int) -> None:
    assert edit[0] in GOOD
    err = error(tmp_path, GOOD.replace(edit[0], edit[1], 1))
    assert err.message.startswith(message), err.message
    assert err.line == line
    assert err.file is not None and err.file.endswith("runners.yaml")


def test_a_typo_gets_a_suggestion(tmp_path: Path) -> None:
    err = error(tmp_path, GOOD.replace("idle_timeout: 10m", "idle_timout: 10m"))
    assert err.hint is not None and "did you mean 'idle_timeout'?" in err.hint


def test_secrets_must_be_present(tmp_path: Path) -> None:
    err = error(tmp_path, GOOD, env={})
    assert "$HOOK_SECRET is not set (it holds the webhook secret)" in err.message
    assert err.hint is not None and "runners.env" in err.hint
    short = error(tmp_path, GOOD, env={"HOOK_SECRET": "abc"})
    assert "shorter than 16 characters" in short.message
    # `runners status` does not need them.
    assert load_config(write(tmp_path, GOOD), {}, need_secrets=False).pools


def test_the_private_key_file_must_be_readable_and_a_pem(tmp_path: Path) -> None:
    err = error(tmp_path, GOOD.replace("app.pem", "missing.pem"))
    assert "cannot read" in err.message and "missing.pem" in err.message
    (tmp_path / "bad.pem").write_text("not a key")
    path = write(tmp_path, GOOD.replace("app.pem", "bad.pem"))
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM key"):
        load_config(path, ENV)


def test_exactly_one_auth(tmp_path: Path) -> None:
    both = GOOD.replace("  app:", "  token_env: GH_TOKEN\n  app:")
    assert "exactly one of `app:`" in error(tmp_path, both).message


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_config(tmp_path / "nope.yaml", ENV)
    assert info.value.hint is not None and "--config" in info.value.hint
    assert "expected a mapping" in error(tmp_path, "- 1\n").message


@pytest.mark.parametrize(("text", "seconds"), [(300, 300.0), ("90s", 90.0), ("5m", 300.0),
                                               ("1.5h", 5400.0), ("1d", 86400.0)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_sizes() -> None:
    assert parse_bytes("512MiB") == 512 * 1024**2
    assert parse_bytes("16G") == 16 * 1024**3
    assert parse_bytes(1024) == 1024
    with pytest.raises(ValueError):
        parse_bytes("big")
