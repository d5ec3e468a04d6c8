"""`python -m engine validate | explain | schema`, driven through engine.cli.main like a user."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from engine.cli import main

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).parent / "cases"


@pytest.fixture
def config(tmp_path):
    """A copy of the shipped config to break on purpose."""
    shutil.copy(ROOT / "models.yaml", tmp_path / "models.yaml")
    shutil.copytree(ROOT / "routes", tmp_path / "routes")
    return tmp_path


@pytest.fixture
def request_file(tmp_path):
    path = tmp_path / "req.json"
    path.write_text(
        json.dumps(
            {
                "messages": [{"role": "user", "content": "write a sort"}],
                "metadata": {"task_type": "code"},
            }
        )
    )
    return path


def test_validate_reports_every_problem_sorted_with_hints(config, capsys):
    """Two broken files: every problem printed as file:line:col: path: message (hint), sorted."""
    (config / "routes" / "broken.yaml").write_text(
        "strategy: ordered\nfallbak: {}\ncandidates: [mock/fsat]\n"
    )
    (config / "routes" / "also.yaml").write_text("strategy: cost_optimised\n")
    assert main(["validate", str(config)]) == 1
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "[warning]" not in ln]
    assert lines == sorted(lines)
    text = "\n".join(lines)
    assert f"{config}/routes/also.yaml:1:1: strategy: `cost_optimised` is not one of" in text
    assert "did you mean `cost_optimized`?" in text
    assert (
        f"{config}/routes/broken.yaml:2:1: fallbak: unknown key `fallbak` (hint: did you mean `fallback`?)"
        in text
    )


def test_validate_json_format_for_ci(config, capsys):
    """--format json lists diagnostics with severity, file, line, column, path, message, hint."""
    (config / "routes" / "broken.yaml").write_text("strategy: ordered\ncandidates: [nope/nope]\n")
    assert main(["validate", "--format", "json", str(config)]) == 1
    body = json.loads(capsys.readouterr().out)
    errors = [d for d in body["diagnostics"] if d["severity"] == "error"]
    assert body["errors"] == len(errors) == 1
    assert errors[0]["line"] == 2 and errors[0]["path"] == "candidates[0]"
    assert "unknown model `nope/nope`" in errors[0]["message"]


def test_validate_routes_dir_and_single_files(config, capsys):
    """validate accepts routes/, models.yaml and single route files, resolving models nearby."""
    assert main(["validate", str(config / "routes")]) == 0
    assert main(["validate", str(config / "models.yaml")]) == 0
    assert main(["validate", str(config / "routes" / "smart_router.yaml")]) == 0


def test_validate_strict_fails_on_warnings(config, monkeypatch):
    """--strict turns warnings (unset keys) into a failing exit code."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["validate", "--strict", str(config)]) == 1


def test_validate_usage_errors_exit_2(tmp_path, capsys):
    """A missing path or no path at all is a usage error (exit 2)."""
    assert main(["validate", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["validate"]) == 2


def test_validate_never_tracebacks_on_garbage(tmp_path, capsys):
    """Binary, empty and malformed route files are each reported; exit 1, no exception."""
    shutil.copy(CASES / "models.yaml", tmp_path / "models.yaml")
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "bin.yaml").write_bytes(b"\x00\x01\x02")
    (routes / "empty.yaml").write_text("")
    (routes / "bad.yaml").write_text("a: [\n")
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "bin.yaml: binary file" in out
    assert "empty.yaml:1:1: file is empty" in out
    assert "bad.yaml:2:1: invalid YAML" in out


def test_explain_shows_path_ranking_and_eliminations(request_file, capsys, monkeypatch):
    """explain prints the rule path, ranked candidates with cost, and eliminated reasons."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    code = main(
        [
            "explain",
            "--policy",
            "smart_router",
            "--request",
            str(request_file),
            "--config",
            str(ROOT),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "smart_router: rule `code` matched" in out
    assert "-> policy `code_generation`" in out
    assert "mock/coder" in out
    assert "anthropic/claude-sonnet-4-5: provider disabled: ANTHROPIC_API_KEY is not set" in out


def test_explain_json_and_default_policy(request_file, capsys):
    """Without --policy the default policy is explained; --format json is machine readable."""
    assert (
        main(["explain", "--request", str(request_file), "--config", str(ROOT), "--format", "json"])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["policy"] == "default"
    assert data["ranked"][0]["model"] == "mock/fast"
    assert data["features"]["task_type"] == "code"


def test_explain_never_shows_a_key(request_file, capsys, monkeypatch):
    """Even with keys configured, explain output contains no key material."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-abcdefghijklmnop")
    assert (
        main(
            [
                "explain",
                "--policy",
                "ordered",
                "--request",
                str(request_file),
                "--config",
                str(ROOT),
                "--format",
                "json",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "sk-secret" not in out
    assert (
        main(
            [
                "explain",
                "--policy",
                "ordered",
                "--request",
                str(request_file),
                "--config",
                str(ROOT),
            ]
        )
        == 0
    )
    assert "sk-secret" not in capsys.readouterr().out


def test_explain_errors(tmp_path, request_file, capsys):
    """Unknown policy and invalid request JSON exit 1 and 2 with a message, no traceback."""
    assert (
        main(["explain", "--policy", "nope", "--request", str(request_file), "--config", str(ROOT)])
        == 1
    )
    assert "unknown policy `nope`" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert main(["explain", "--request", str(bad), "--config", str(ROOT)]) == 2
    assert "invalid JSON" in capsys.readouterr().err
    bad.write_text('{"messages": []}')
    assert main(["explain", "--request", str(bad), "--config", str(ROOT)]) == 1
    assert "invalid request" in capsys.readouterr().err


def test_schema_write_and_check(tmp_path, capsys):
    """schema --write generates both files; --check passes on them and fails when stale."""
    assert main(["schema", "--write", "--dir", str(tmp_path)]) == 0
    assert main(["schema", "--check", "--dir", str(tmp_path)]) == 0
    models = json.loads((tmp_path / "models.schema.json").read_text())
    assert models["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    (tmp_path / "route.schema.json").write_text("{}")
    assert main(["schema", "--check", "--dir", str(tmp_path)]) == 1
    assert "stale" in capsys.readouterr().err


def test_validate_a_directory_without_config_is_a_usage_error(tmp_path, capsys):
    """A directory holding no models.yaml and no route files exits 2 instead of '0 errors'."""
    (tmp_path / "empty").mkdir()
    assert main(["validate", str(tmp_path / "empty")]) == 2
    assert "no models.yaml or route files" in capsys.readouterr().err


def test_schema_write_to_an_unwritable_dir_exits_1_without_traceback(tmp_path, capsys):
    """schema --write --dir naming an existing file reports the reason and exits 1."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["schema", "--write", "--dir", str(blocker)]) == 1
    assert f"cannot write to {blocker}" in capsys.readouterr().err


def test_explain_reads_the_request_from_stdin(monkeypatch, capsys):
    """--request - reads the request JSON from standard input."""
    body = {"messages": [{"role": "user", "content": "hi"}]}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(body)))
    code = main(["explain", "--request", "-", "--config", str(ROOT), "--format", "json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["policy"] == "default"


def test_explain_uses_the_policy_named_by_the_request_model(tmp_path, capsys):
    """Without --policy, a request whose `model` names a policy is explained for that policy."""
    req = tmp_path / "req.json"
    req.write_text(
        json.dumps({"model": "high_quality", "messages": [{"role": "user", "content": "hi"}]})
    )
    assert main(["explain", "--request", str(req), "--config", str(ROOT), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["policy"] == "high_quality"


def test_explain_without_any_policy_says_so(config, request_file, capsys):
    """No --policy, no policy in the request and no default policy: exit 1 saying what to add."""
    for route in (config / "routes").iterdir():
        route.unlink()
    assert main(["explain", "--request", str(request_file), "--config", str(config)]) == 1
    assert "no default policy (add routes/default.yaml or pass --policy)" in capsys.readouterr().err
