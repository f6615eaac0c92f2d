"""Config: defaults, then a TOML file, then HROOT_LISTEN/HROOT_DATA, then flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.config import Config, ConfigError, load_config, parse_listen
from registry.upstreams import upstream_of


def test_defaults_need_nothing() -> None:
    config = load_config(env={})
    assert config == Config()
    assert (config.listen, config.data) == ("127.0.0.1:5000", Path("hroot.git"))
    assert config.max_manifest_size == 4 << 20


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    file = tmp_path / "hroot.toml"
    file.write_text(
        'listen = "0.0.0.0:6000"\ndata = "/srv/file.git"\nlog_level = "debug"\n'
        "max_page_size = 50\nshutdown_timeout = 3\n"
    )
    from_file = load_config(file, env={})
    assert (from_file.host, from_file.port, from_file.data) == (
        "0.0.0.0",
        6000,
        Path("/srv/file.git"),
    )
    assert (from_file.log_level, from_file.max_page_size, from_file.shutdown_timeout) == (
        "debug",
        50,
        3.0,
    )
    env = {"HROOT_LISTEN": "127.0.0.2:7000", "HROOT_DATA": "/srv/env.git"}
    from_env = load_config(file, env=env)
    assert (from_env.listen, from_env.data) == ("127.0.0.2:7000", Path("/srv/env.git"))
    from_flags = load_config(file, env=env, listen="[::1]:8000", data=None, log_level="error")
    assert (from_flags.host, from_flags.port, from_flags.data) == (
        "::1",
        8000,
        Path("/srv/env.git"),
    )
    assert (from_flags.listen, from_flags.log_level) == ("[::1]:8000", "error")


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("h:1", ("h", 1)), (":5000", ("0.0.0.0", 5000)), ("[::]:80", ("::", 80))],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize(
    "toml",
    [
        'listen = "nohostport"',
        'listen = "h:0"',
        'listen = "h:65536"',
        "listen = 5000",
        'colour = "blue"',
        'max_manifest_size = "4MiB"',
        "max_manifest_size = 0",
        'log_level = "loud"',
        "shutdown_timeout = -1",
        "this is not toml",
        'tls_cert = "cert.pem"',
        'auth_challenge = "digest"\nhtpasswd = "h"',
        'auth_challenge = "basic"',
        'trusted_issuer = "auth"',
        'trusted_issuer = "auth"\ntrusted_issuer_key = "k.pem"',
        'trusted_issuer = "hroot"\ntrusted_issuer_key = "k.pem"\nhtpasswd = "h"',
        'anonymous_pull = "*"',
        "groups = [1]",
        '[groups]\nci = ["a", 2]',
        '[[access]]\nnames = ["*"]\nactions = ["pull"]',
        '[[access]]\nnames = ["*"]\nactions = ["steal"]\nusers = ["a"]',
        '[[access]]\nnames = ["*"]\nactions = ["pull"]\nusers = ["a"]\nwho = 1',
        "body_timeout = 0",
        "max_uploads_per_client = 0",
    ],
)
def test_bad_settings_are_refused_with_their_source(tmp_path: Path, toml: str) -> None:
    file = tmp_path / "hroot.toml"
    file.write_text(toml + "\n")
    with pytest.raises(ConfigError, match=str(file)):
        load_config(file, env={})


def test_bad_environment_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="environment"):
        load_config(env={"HROOT_LISTEN": "localhost"})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml", env={})


def test_access_rules_from_the_file(tmp_path: Path) -> None:
    file = tmp_path / "hroot.toml"
    file.write_text(
        'htpasswd = "users"\nanonymous_pull = ["public/*"]\n'
        '[groups]\nci = ["builder"]\n'
        '[[access]]\nnames = ["ci/*"]\nactions = ["*"]\ngroups = ["ci"]\n'
        '[[access]]\nnames = ["*"]\nactions = ["pull"]\nusers = ["*"]\n'
    )
    rules = load_config(file, env={}).rules
    assert rules.allows("builder", "push", "ci/app/x")
    assert rules.allows("builder", "delete", "ci/app")
    assert not rules.allows("builder", "push", "app")
    assert rules.allows("anyone", "pull", "app")
    assert not rules.allows(None, "pull", "app")
    assert rules.allows(None, "pull", "public/base")
    assert rules.allows_everywhere("anyone", "pull")
    assert not rules.allows_everywhere("builder", "push")


def test_upstreams_from_the_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    file = tmp_path / "hroot.toml"
    file.write_text(
        '[[upstream]]\nurl = "docker.io"\nprefix = "docker.io"\n'
        '[[upstream]]\nurl = "https://ghcr.io/"\nprefix = "ghcr.io"\nttl = 60\n'
        f'username = "me"\npassword_file = "{tmp_path / "token"}"\n'
        '[[upstream]]\nurl = "http://127.0.0.1:5001"\nprefix = "ghcr.io/special"\n'
    )
    config = load_config(file, env={})
    hub, ghcr, special = config.upstream
    assert (hub.url, hub.remote("docker.io/alpine")) == (
        "https://registry-1.docker.io",
        "library/alpine",
    )
    assert hub.remote("docker.io/grafana/grafana") == "grafana/grafana"
    assert (ghcr.url, ghcr.password, ghcr.ttl) == ("https://ghcr.io", "s3cret", 60.0)
    assert ghcr.remote("ghcr.io/org/app") == "org/app"
    assert upstream_of(config.upstream, "ghcr.io/special/x") is special  # the longest prefix
    assert upstream_of(config.upstream, "ghcr.io/org/app") is ghcr
    assert upstream_of(config.upstream, "mine/app") is None
    assert upstream_of(config.upstream, "docker.iox/app") is None
    everything = load_config(env={}, upstream=[{"url": "http://up:5000"}]).upstream[0]
    assert everything.covers("any/name") and everything.remote("alpine") == "alpine"


@pytest.mark.parametrize(
    "toml",
    [
        '[[upstream]]\nprefix = "a"',
        '[[upstream]]\nurl = "ftp://x"',
        '[[upstream]]\nurl = "https://x/path"',
        '[[upstream]]\nurl = "https://u:p@x"',
        '[[upstream]]\nurl = "https://x"\nusername = "u"',
        '[[upstream]]\nurl = "https://x"\nttl = -1',
        '[[upstream]]\nurl = "https://x"\nprefix = "/a"',
        '[[upstream]]\nurl = "https://x"\ncolour = "blue"',
        '[[upstream]]\nurl = "https://x"\n[[upstream]]\nurl = "https://y"',
        '[[upstream]]\nurl = "https://x"\npassword_file = "/absent"\nusername = "u"',
        'follow = "/elsewhere"\n[[upstream]]\nurl = "https://x"',
    ],
)
def test_bad_upstreams_are_refused(tmp_path: Path, toml: str) -> None:
    file = tmp_path / "hroot.toml"
    file.write_text(toml + "\n")
    with pytest.raises(ConfigError, match=str(file)):
        load_config(file, env={})
