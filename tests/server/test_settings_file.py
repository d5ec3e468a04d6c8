"""server.yaml goes through the bounded, line-numbered config loader (issue 14): an alias
bomb, deep nesting, an alias containing itself or a bad value is one `file:line:col`
diagnostic from `python -m engine serve` and `validate`, never a traceback or gigabytes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.server.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]

#: Nine nested levels of nine aliases: 9**9 (387 million) values once expanded, in 1 KB.
BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)


def config_with_server_yaml(tmp_path: Path, text: str) -> Path:
    """The shipped config (models.yaml, routes/) plus the given server.yaml."""
    config = tmp_path / "cfg"
    config.mkdir()
    shutil.copy(ROOT / "models.yaml", config / "models.yaml")
    shutil.copytree(ROOT / "routes", config / "routes")
    (config / "server.yaml").write_text(text)
    return config


def engine_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "where", "needle"),
    [
        (BOMB, "server.yaml:", "alias bomb"),
        ("port: " + "[" * 200 + "]" * 200 + "\n", "server.yaml:1:", "nesting"),
        ("port: 9000\nworkers: two\n", "server.yaml:2:1: workers", "integer"),
        ("host: 127.0.0.1\nprot: 9000\n", "server.yaml:2:1", "prot"),
        ("a: &a [*a]\n", "server.yaml:1:", "alias"),
    ],
)
def test_a_bad_server_yaml_stops_serve_with_file_line(
    tmp_path: Path, text: str, where: str, needle: str
) -> None:
    """`serve` exits 1 before binding with the located problem, no traceback, no file text."""
    config = config_with_server_yaml(tmp_path, text)
    out = engine_cli("serve", "--config", str(config), "--port", "1")
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    line = next(x for x in out.stderr.splitlines() if where in x)
    assert needle in line.lower() or needle in line
    validated = engine_cli("validate", str(config))
    assert validated.returncode == 1
    assert where in validated.stdout and "Traceback" not in validated.stderr


def test_a_key_in_a_broken_server_yaml_is_not_quoted(tmp_path: Path) -> None:
    """A syntax error next to a client key reports the position, not the line's text."""
    (tmp_path / "server.yaml").write_text("api_keys:\n  - key: sk-secret-abcdef-123456\n  - [\n")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, env={})
    text = " ".join(d.format() for d in info.value.diagnostics)
    assert "server.yaml:" in text and "sk-secret" not in text


def test_a_commented_out_server_yaml_means_the_defaults(tmp_path: Path) -> None:
    """A server.yaml with only comments is every default, as before."""
    (tmp_path / "server.yaml").write_text("# port: 9000\n\n")
    assert load_settings(tmp_path, env={}).port == load_settings(tmp_path / "none", env={}).port


def test_a_good_server_yaml_validates_clean(tmp_path: Path) -> None:
    """validate of a config dir with a correct server.yaml reports no error."""
    config = config_with_server_yaml(tmp_path, "port: 9000\nworkers: 2\n")
    out = engine_cli("validate", str(config))
    assert out.returncode == 0, out.stdout
    assert "server.yaml" not in out.stdout
