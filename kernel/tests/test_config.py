"""Config layering, provenance, validation errors and secrets, through the real loader."""

from __future__ import annotations

from pathlib import Path

import pytest
from noa.kernel.config import BootOptions, load
from noa.plugin_sdk import ConfigError, PluginConfig, Secret
from noa.plugin_sdk.config import MASK


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_later_layers_win_and_each_key_names_its_layer(tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    write(
        config_dir / "default.toml", "[server]\nport = 9001\nworkers = 3\nshutdown_grace_s = 4.0\n"
    )
    write(config_dir / "embedded.toml", "[server]\nport = 9002\nworkers = 4\n")
    extra = write(tmp_path / "extra.toml", "[server]\nport = 9003\n")
    boot = BootOptions(
        config_dir=str(config_dir),
        config_file=str(extra),
        overrides=(("server.host", "0.0.0.0", "CLI --host"),),
    )
    config = load(boot, environ={"NOA_SERVER__WORKERS": "5"})

    server = config.kernel.server
    assert (server.port, server.workers, server.shutdown_grace_s, server.host) == (
        9003,
        5,
        4.0,
        "0.0.0.0",
    )
    sources = config.effective()["sources"]
    assert sources["server.port"] == f"--config {extra}"
    assert sources["server.workers"] == "environment NOA_SERVER__WORKERS"
    assert sources["server.shutdown_grace_s"] == str(config_dir / "default.toml")
    assert sources["server.host"] == "CLI --host"
    assert sources["server.data_dir"] == "built-in default"
    assert sources["drivers.storage"] == "packaged profile embedded"


def test_profile_comes_from_environment_and_selects_packaged_baseline(tmp_path: Path) -> None:
    config = load(BootOptions(config_dir=str(tmp_path)), environ={"NOA_PROFILE": "prod"})
    assert config.profile == "prod"
    assert config.kernel.drivers["storage"] == "postgres"
    assert config.effective()["sources"]["profile"] == "environment NOA_PROFILE"


def test_unknown_profile_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(BootOptions(profile="prodd", config_dir=str(tmp_path)), environ={})
    assert caught.value.key == "profile"
    assert "embedded" in str(caught.value) and "prod" in str(caught.value)


@pytest.mark.parametrize(
    ("environ", "key", "value", "layer"),
    [
        ({"NOA_SERVER__PORT": "eighty"}, "server.port", "eighty", "environment NOA_SERVER__PORT"),
        ({"NOA_SERVER__PORT": "70000"}, "server.port", "70000", "environment NOA_SERVER__PORT"),
        (
            {"NOA_PLUGINS__DISABLE": "[1, 2]"},
            "plugins.disable.0",
            1,
            "environment NOA_PLUGINS__DISABLE",
        ),
    ],
)
def test_invalid_value_names_key_value_and_layer(
    tmp_path: Path, environ: dict[str, str], key: str, value: object, layer: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(BootOptions(config_dir=str(tmp_path)), environ=environ)
    error = caught.value
    assert (error.key, error.value, error.layer) == (key, value, layer)


def test_invalid_value_in_a_file_names_the_file(tmp_path: Path) -> None:
    write(tmp_path / "default.toml", "[server]\nworkers = 0\n")
    with pytest.raises(ConfigError) as caught:
        load(BootOptions(config_dir=str(tmp_path)), environ={})
    assert caught.value.key == "server.workers"
    assert caught.value.layer == str(tmp_path / "default.toml")
    assert ">= 1" in str(caught.value)


def test_misspelt_key_is_an_error_not_ignored(tmp_path: Path) -> None:
    write(tmp_path / "default.toml", "[server]\nprot = 1\n")
    with pytest.raises(ConfigError) as caught:
        load(BootOptions(config_dir=str(tmp_path)), environ={})
    assert caught.value.key == "server.prot"
    assert "unknown key" in caught.value.reason


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    write(tmp_path / "default.toml", "[server\nport = 1\n")
    with pytest.raises(ConfigError) as caught:
        load(BootOptions(config_dir=str(tmp_path)), environ={})
    assert caught.value.layer == str(tmp_path / "default.toml")
    assert "invalid TOML" in str(caught.value)


class DbConfig(PluginConfig, frozen=True):
    url: str = "sqlite://"
    password: Secret = Secret("")
    token: Secret = Secret("")
    pool_size: int = 5


def test_secret_references_are_resolved_and_masked(tmp_path: Path) -> None:
    secret_file = write(tmp_path / "token.txt", "from-a-file\n")
    write(
        tmp_path / "default.toml",
        f'[db]\nurl = {{env = "DB_URL"}}\npassword = {{env = "DB_PASSWORD"}}\ntoken = {{file = "{secret_file}"}}\n',
    )
    config = load(
        BootOptions(config_dir=str(tmp_path)),
        environ={"DB_PASSWORD": "hunter2", "DB_URL": "postgres://u:p@h/db"},
    )
    db = config.bind_section("db", DbConfig)
    assert db.password.reveal() == "hunter2"
    assert db.token.reveal() == "from-a-file"
    assert db.url == "postgres://u:p@h/db"
    assert "hunter2" not in repr(db) and "hunter2" not in str(db.password)

    shown = config.effective()
    assert shown["values"]["db"]["password"] == MASK
    assert shown["values"]["db"]["token"] == MASK
    assert shown["values"]["db"]["url"] == MASK  # a plain str given by reference is masked too
    assert shown["values"]["db"]["pool_size"] == 5
    assert "hunter2" not in repr(shown) and "from-a-file" not in repr(shown)


def test_secret_written_inline_is_masked_when_shown(tmp_path: Path) -> None:
    config = load(BootOptions(config_dir=str(tmp_path)), environ={"NOA_DB__PASSWORD": "inline"})
    config.bind_section("db", DbConfig)
    assert config.effective()["values"]["db"]["password"] == MASK


def test_missing_secret_reference_names_variable_and_layer(tmp_path: Path) -> None:
    write(tmp_path / "default.toml", '[db]\npassword = {env = "NOT_SET_ANYWHERE"}\n')
    with pytest.raises(ConfigError) as caught:
        load(BootOptions(config_dir=str(tmp_path)), environ={})
    assert caught.value.key == "db.password"
    assert "NOT_SET_ANYWHERE" in str(caught.value)
    assert caught.value.layer == str(tmp_path / "default.toml")


def test_plugin_section_errors_name_the_layer(tmp_path: Path) -> None:
    config = load(BootOptions(config_dir=str(tmp_path)), environ={"NOA_DB__POOL_SIZE": "many"})
    with pytest.raises(ConfigError) as caught:
        config.bind_section("db", DbConfig)
    assert (caught.value.key, caught.value.layer) == (
        "db.pool_size",
        "environment NOA_DB__POOL_SIZE",
    )


def test_env_json_values_and_string_coercion(tmp_path: Path) -> None:
    config = load(
        BootOptions(config_dir=str(tmp_path)),
        environ={"NOA_PLUGINS__DISABLE": '["hello", "other"]', "NOA_PLUGINS__AUTOLOAD": "false"},
    )
    assert config.kernel.plugins.disable == ("hello", "other")
    assert config.kernel.plugins.autoload is False


def test_dotenv_file_is_loaded_without_overriding_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = write(tmp_path / "custom.env", "NOA_SERVER__PORT=9100\nNOA_SERVER__WORKERS=2\n")
    monkeypatch.setenv("NOA_SERVER__WORKERS", "3")
    monkeypatch.delenv("NOA_SERVER__PORT", raising=False)
    config = load(BootOptions(config_dir=str(tmp_path), env_file=str(env_file)))
    assert config.kernel.server.port == 9100
    assert config.kernel.server.workers == 3
    assert config.effective()["sources"]["server.port"] == "environment NOA_SERVER__PORT"


def test_unclaimed_section_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "default.toml", "[retired_plugin]\nx = 1\n")
    config = load(BootOptions(config_dir=str(tmp_path)), environ={})
    assert config.unclaimed_sections() == ["retired_plugin"]
