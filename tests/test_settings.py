from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor import ConfigurationError, Settings
from conveyor.settings import parse_queues


def test_parse_queues_accepts_sidekiq_style_weights() -> None:
    assert parse_queues("critical,3 default low,1") == (("critical", 3), ("default", 1), ("low", 1))
    assert parse_queues(["a,2", "b"]) == (("a", 2), ("b", 1))


@pytest.mark.parametrize(
    ("spec", "fragment"), [("a,x", "'x' for 'a'"), ("a,0", ">= 1"), ("", "no queues")]
)
def test_parse_queues_names_the_bad_part(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        parse_queues(spec)


def test_load_layers_file_env_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "conveyor.json"
    path.write_text(json.dumps({"concurrency": 3, "tag": "file", "queues": "a,2 b"}))
    env = {
        "CONVEYOR_TAG": "env",
        "CONVEYOR_SHUTDOWN_TIMEOUT": "7.5",
        "CONVEYOR_STRICT_ORDER": "true",
    }
    s = Settings.load(path, env=env, processes=2)
    assert s.concurrency == 3
    assert s.tag == "env"
    assert s.shutdown_timeout == 7.5
    assert s.strict_order is True
    assert s.processes == 2
    assert s.queues == (("a", 2), ("b", 1))


def test_load_refuses_unknown_settings_and_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"concurency": 3}))
    with pytest.raises(ConfigurationError, match=r"unknown setting.*concurency"):
        Settings.load(path, env={})
    with pytest.raises(ConfigurationError, match="CONVEYOR_CONCURRENCY='many'"):
        Settings.load(env={"CONVEYOR_CONCURRENCY": "many"})


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"redis_url": "http://x"}, "must start with redis://"),
        ({"concurrency": 0}, "concurrency must be a positive integer"),
        ({"heartbeat_interval": 5, "liveness_ttl": 5}, "must exceed heartbeat_interval"),
    ],
)
def test_settings_validate(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_no_environment_read_without_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_CONCURRENCY", "99")
    assert Settings().concurrency == 10
    assert Settings.load().concurrency == 99


def test_durability_settings_load_from_the_environment() -> None:
    env = {
        "CONVEYOR_REDIS_URL": "redis+sentinel://s1,s2,s3/jobs",
        "CONVEYOR_MIN_REPLICAS": "2",
        "CONVEYOR_MIN_REPLICAS_TIMEOUT": "0.25",
        "CONVEYOR_RECONNECT_TIMEOUT": "45",
        "CONVEYOR_EMBEDDED_FSYNC": "always",
    }
    s = Settings.load(env=env)
    assert (s.min_replicas, s.min_replicas_timeout, s.reconnect_timeout) == (2, 0.25, 45.0)
    assert s.embedded_fsync == "always"
    assert Settings().min_replicas == 0 and Settings().embedded_fsync == "everysec"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"redis_url": "redis://h", "min_replicas": -1}, "min_replicas must be an integer >= 0"),
        ({"min_replicas": 1}, "min_replicas=1 needs a replicated Redis, but no redis_url"),
        ({"redis_url": "redis://h", "min_replicas_timeout": 0}, "min_replicas_timeout must be"),
        ({"reconnect_timeout": -1}, "reconnect_timeout must be > 0"),
        ({"embedded_fsync": "sometimes"}, "embedded_fsync must be 'everysec' or 'always'"),
        # The value ends up in the embedded server's config file: no second line gets in.
        ({"embedded_fsync": "always\nrequirepass x"}, "embedded_fsync must be"),
    ],
)
def test_durability_settings_validate(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        Settings(**kwargs)  # type: ignore[arg-type]
