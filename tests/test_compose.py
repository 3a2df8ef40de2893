"""The deployment files: docker-compose.yml as the real docker-compose renders it, and the
Dockerfile's final stage. Neither needs a Docker engine: `docker-compose config` only parses,
validates and interpolates.

The compose tests skip where Debian's `docker-compose` (1.29) is not installed, and fail
instead when CI is set, since .ci/run installs it. Quirks of 1.29's rendering that the checks
allow for: it adds `version: '3.9'`, prints `"8080:8080"` ports as `{published, target}` but
`"ip:host:container"` ones as strings with `/tcp`, and a disabled healthcheck as
`test: [NONE]`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tusserver.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

ONE_SHOTS = {"migrate", "minio-setup"}
LONG_RUNNING = {"server", "sweeper", "redis", "postgres", "minio"}
# Built from the Dockerfile: the tusserver image.
TUSSERVER_SERVICES = {"server", "sweeper", "migrate"}
# Host ports and the variables that move them; nothing else may be published.
PUBLISHED = {
    "server": {"TUS_PORT": (8080, 8080)},
    "minio": {"MINIO_PORT": (9000, 9000), "MINIO_CONSOLE_PORT": (9001, 9001)},
}

Render = Callable[..., dict[str, Any]]


def _compose_binary() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed; .ci/run installs it on CI")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    return found


def _run_compose(
    binary: str, tmp: Path, *args: str, env_file: Path | None = None, **env: str
) -> str:
    # A clean environment and an empty env file by default: neither the caller's shell nor a
    # developer's .env may change what is checked. Only the variables a test passes are set.
    if env_file is None:
        env_file = tmp / "empty.env"
        env_file.write_text("")
    command = [binary, "--project-directory", str(ROOT), "--file", str(COMPOSE_FILE)]
    result = subprocess.run(
        [*command, "--env-file", str(env_file), "config", *args],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), **env},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"docker-compose config {' '.join(args)}:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def render(tmp_path_factory: pytest.TempPathFactory) -> Render:
    binary = _compose_binary()
    tmp = tmp_path_factory.mktemp("compose")

    def rendered(**env: str) -> dict[str, Any]:
        config = yaml.safe_load(_run_compose(binary, tmp, **env))
        assert isinstance(config, dict)
        return config

    return rendered


@pytest.fixture(scope="module")
def services(render: Render) -> dict[str, dict[str, Any]]:
    return render()["services"]


def _published(port: object) -> tuple[str | None, int, int]:
    """(host ip, host port, container port) from either form 1.29 prints."""
    if isinstance(port, dict):
        return port.get("host_ip"), int(port["published"]), int(port["target"])
    assert isinstance(port, str), port
    parts = port.split("/")[0].split(":")
    ip = parts[0] if len(parts) == 3 else None
    return ip, int(parts[-2]), int(parts[-1])


def test_config_validates(tmp_path: Path) -> None:
    _run_compose(_compose_binary(), tmp_path, "-q")


def test_config_validates_with_env_example(tmp_path: Path) -> None:
    _run_compose(_compose_binary(), tmp_path, "-q", env_file=ENV_EXAMPLE)


def test_services_present(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == LONG_RUNNING | ONE_SHOTS


def test_server_waits_for_everything_it_needs(services: dict[str, dict[str, Any]]) -> None:
    assert services["server"]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
        "minio": {"condition": "service_healthy"},
        "minio-setup": {"condition": "service_completed_successfully"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert services["sweeper"]["depends_on"] == services["server"]["depends_on"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["minio-setup"]["depends_on"] == {"minio": {"condition": "service_healthy"}}


@pytest.mark.parametrize("name", sorted(LONG_RUNNING))
def test_long_running_services_have_a_healthcheck_and_restart(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    test = service.get("healthcheck", {}).get("test")
    assert test, f"{name} has no healthcheck"
    assert test[0] in ("CMD", "CMD-SHELL"), f"{name}'s healthcheck is disabled: {test}"
    assert service.get("restart") == "unless-stopped"


@pytest.mark.parametrize("name", sorted(ONE_SHOTS))
def test_one_shots_run_once(services: dict[str, dict[str, Any]], name: str) -> None:
    assert services[name]["restart"] == "no"
    assert "ports" not in services[name]


def test_server_health_is_readiness(services: dict[str, dict[str, Any]]) -> None:
    test = " ".join(services["server"]["healthcheck"]["test"])
    assert "python" in test  # the slim image has no curl
    assert "http://127.0.0.1:8080/readyz" in test


def test_tusserver_services_share_one_image(services: dict[str, dict[str, Any]]) -> None:
    images = {services[name]["image"] for name in TUSSERVER_SERVICES}
    assert len(images) == 1
    for name in TUSSERVER_SERVICES:
        # Each names the build too, so `up` builds the local tag instead of trying to pull it.
        assert Path(services[name]["build"]["context"]) == ROOT
    assert services["server"]["command"][0] == "serve"
    assert services["sweeper"]["command"] == ["sweep", "--interval", "60"]
    assert services["migrate"]["command"] == ["migrate"]


def test_server_environment_is_distributed_mode(services: dict[str, dict[str, Any]]) -> None:
    env = services["server"]["environment"]
    assert env["TUS_STORAGE"] == "s3"
    assert env["TUS_STATE"] == "redis"
    assert env["TUS_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert env["TUS_DATABASE_URL"].split("@", 1)[1].startswith("postgres:")
    assert env["TUS_REDIS_URL"].split("@", 1)[1].startswith("redis:6379")
    assert env["TUS_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["TUS_S3_ADDRESSING_STYLE"] == "path"
    # Browsers on the host cannot resolve `minio`: presigned URLs name MinIO's published port.
    assert env["TUS_S3_PUBLIC_ENDPOINT_URL"] == "http://localhost:9000"
    assert services["minio"]["ports"][0].startswith("127.0.0.1:9000:")
    assert env["TUS_DATABASE_MIGRATE"] == "false"  # the migrate job does it, once
    assert env["AWS_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
    assert env["TUS_S3_BUCKET"] == services["minio-setup"]["environment"]["TUS_S3_BUCKET"]
    for name in TUSSERVER_SERVICES:
        assert services[name]["environment"] == env


def test_server_environment_is_valid_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real validation the container will run: s3 needs a bucket and max size, the
    # database URL needs an async driver, and so on.
    for key in list(os.environ):
        if key.startswith("TUS_"):
            monkeypatch.delenv(key)
    for key, value in services["server"]["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    assert settings.storage == "s3"
    assert settings.state == "redis"
    assert settings.public_url is None  # an empty TUS_PUBLIC_URL means "per request"
    assert settings.database_migrate is False


def test_secrets_are_env_driven_with_marked_defaults(services: dict[str, dict[str, Any]]) -> None:
    defaults = [
        services["postgres"]["environment"]["POSTGRES_PASSWORD"],
        services["minio"]["environment"]["MINIO_ROOT_PASSWORD"],
        services["redis"]["environment"]["REDISCLI_AUTH"],
    ]
    assert all(value == "change-me" for value in defaults), defaults


def test_secrets_follow_the_environment(render: Render) -> None:
    services = render(
        POSTGRES_PASSWORD="pg-secret",
        REDIS_PASSWORD="redis-secret",
        MINIO_ROOT_PASSWORD="s3-secret",
    )["services"]
    env = services["server"]["environment"]
    assert ":pg-secret@postgres:" in env["TUS_DATABASE_URL"]
    assert ":redis-secret@redis:" in env["TUS_REDIS_URL"]
    assert env["AWS_SECRET_ACCESS_KEY"] == "s3-secret"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pg-secret"
    assert "redis-secret" in services["redis"]["command"]
    assert services["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == "s3-secret"


def test_only_env_driven_host_ports(render: Render, services: dict[str, dict[str, Any]]) -> None:
    moved = {
        var: str(20000 + i)
        for i, var in enumerate(sorted(v for p in PUBLISHED.values() for v in p))
    }
    shifted = render(**moved)["services"]
    for name, service in services.items():
        expected = PUBLISHED.get(name, {})
        ports = [_published(port) for port in service.get("ports", [])]
        assert sorted((host, target) for _, host, target in ports) == sorted(expected.values())
        again = [_published(port) for port in shifted[name].get("ports", [])]
        assert sorted((host, target) for _, host, target in again) == sorted(
            (int(moved[var]), target) for var, (_, target) in expected.items()
        )
    # MinIO, with root credentials in the defaults, listens on loopback unless told otherwise.
    assert {ip for ip, _, _ in map(_published, services["minio"]["ports"])} == {"127.0.0.1"}


def test_state_lives_in_named_volumes(render: Render) -> None:
    config = render()
    assert set(config["volumes"]) == {"server-data", "redis-data", "postgres-data", "minio-data"}
    mounts = {
        name: [str(v).split(":")[:2] for v in service.get("volumes", [])]
        for name, service in config["services"].items()
    }
    assert mounts["server"] == [["server-data", "/data"]]
    assert mounts["redis"] == [["redis-data", "/data"]]
    assert mounts["postgres"] == [["postgres-data", "/var/lib/postgresql/data"]]
    assert mounts["minio"] == [["minio-data", "/data"]]


def test_redis_keeps_an_append_only_file(services: dict[str, dict[str, Any]]) -> None:
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"


def test_env_example_lists_every_variable() -> None:
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE_FILE.read_text()))
    listed = set(re.findall(r"^(\w+)=", ENV_EXAMPLE.read_text(), re.M))
    assert used == listed


# ---- the Dockerfile (text only; building it needs an engine and a registry) --------------


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    lines = (line.strip() for line in joined.splitlines())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions(DOCKERFILE.read_text())
    starts = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    assert len(starts) >= 2, "expected a multi-stage build"
    return instructions[starts[-1] :]


def test_dockerfile_final_stage_runs_as_non_root() -> None:
    users = [arg for op, arg in _final_stage() if op == "USER"]
    assert users, "the final stage never sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]


def test_dockerfile_final_stage_has_a_healthcheck() -> None:
    checks = [arg for op, arg in _final_stage() if op == "HEALTHCHECK"]
    assert checks, "the final stage has no HEALTHCHECK"
    assert "/readyz" in checks[-1]
    assert not checks[-1].upper().startswith("NONE")


def test_dockerfile_runtime_contract() -> None:
    stage = _final_stage()
    args = dict(stage)
    assert stage[0][1].startswith(("python:3.11-slim", "python:${PYTHON_VERSION}-slim"))
    assert args["ENTRYPOINT"] == '["tusserver"]'
    assert args["CMD"] == '["serve", "--host", "0.0.0.0", "--port", "8080"]'
    assert args["EXPOSE"] == "8080"
    assert args["WORKDIR"] == "/app"
    assert "/data" in args["VOLUME"]
    assert "TUS_DATA_DIR=/data" in " ".join(arg for op, arg in stage if op == "ENV")
    assert "WITH_FFMPEG=1" in [arg for op, arg in stage if op == "ARG"]


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "data", ".env", "tests/e2e/js/node_modules"} <= ignored
