"""Environment interpolation: `${VAR}`, `${VAR:-default}`, unset variables, base-URL overrides."""

from __future__ import annotations

from engine.compile import build_plan_from_data, load_plan
from engine.config.env import base_url_variable, interpolate

MODELS = {
    "providers": {
        "acme": {
            "protocol": "openai",
            "base_url": "https://acme.example/v1",
            "api_key": "${ACME_KEY}",
        },
        "mock": {"protocol": "mock", "local": True},
    },
    "models": {
        "acme/big": {"context_window": 1000, "input_price": 1, "output_price": 2},
        "mock/fast": {"context_window": 1000},
    },
}
ROUTES = {"default": {"strategy": "ordered"}}


def test_variables_defaults_and_unset():
    """Set variables are substituted, defaults apply when unset, unset ones are recorded."""
    data = {"a": "${A}", "b": "x-${B:-dflt}-y", "c": ["${C}"], "d": "${A}${C}"}
    result = interpolate(data, {"A": "1a"})
    assert result.data == {"a": "1a", "b": "x-dflt-y", "c": [""], "d": "1a"}
    assert result.unset == {"c[0]": ["C"], "d": ["C"]}


def test_whole_value_interpolation_keeps_yaml_types():
    """`${RPM:-500}` as a whole value becomes the number 500, but keys and URLs stay text."""
    result = interpolate({"rpm": "${RPM:-500}", "flag": "${F:-true}", "api_key": "${K:-123}"}, {})
    assert result.data == {"rpm": 500, "flag": True, "api_key": "123"}


def test_unset_key_disables_provider_with_reason_and_warning():
    """A provider whose key variable is unset is disabled, named in a warning, not an error."""
    plan = build_plan_from_data(MODELS, ROUTES, env={})
    acme = plan.providers["acme"]
    assert (acme.enabled, acme.disabled_reason) == (False, "ACME_KEY is not set")
    assert plan.providers["mock"].enabled


def test_key_pool_and_per_key_limits():
    """`keys` builds a pool; each key has its own limits or the provider's defaults."""
    models = {
        "providers": {
            "acme": {
                "protocol": "openai",
                "base_url": "https://acme.example/v1",
                "limits": {"rpm": 10, "input_tpm": 1000},
                "keys": ["${K1}", {"key": "${K2}", "rpm": 99}, "${K3}"],
            }
        },
        "models": {"acme/big": {"context_window": 1000, "input_price": 1, "output_price": 1}},
    }
    plan = build_plan_from_data(models, ROUTES, env={"K1": "one", "K2": "two"})
    keys = plan.providers["acme"].keys
    assert [k.id for k in keys] == ["acme#0", "acme#1"]
    assert [(k.rpm, k.input_tpm) for k in keys] == [(10, 1000), (99, 1000)]
    assert [k.secret.reveal() for k in keys if k.secret] == ["one", "two"]


def test_base_url_variable_names():
    """Every provider id maps to an upper-case <ID>_BASE_URL variable."""
    assert base_url_variable("openai") == "OPENAI_BASE_URL"
    assert base_url_variable("my-gateway") == "MY_GATEWAY_BASE_URL"


def test_base_url_override_applies_to_any_provider():
    """<ID>_BASE_URL replaces the file's base URL for that provider."""
    plan = build_plan_from_data(
        MODELS, ROUTES, env={"ACME_BASE_URL": "http://127.0.0.1:1/v1", "ACME_KEY": "k"}
    )
    assert plan.providers["acme"].base_url == "http://127.0.0.1:1/v1"
    assert plan.providers["acme"].enabled


def test_unset_variables_are_warnings_with_location(tmp_path):
    """load_plan returns unset variables as located warnings."""
    (tmp_path / "routes").mkdir()
    (tmp_path / "models.yaml").write_text(
        "providers:\n  acme:\n    protocol: openai\n    base_url: http://x\n    api_key: ${ACME_KEY}\n"
        "  mock: {protocol: mock}\nmodels:\n  mock/a: {context_window: 100}\n"
    )
    (tmp_path / "routes" / "default.yaml").write_text("strategy: ordered\ncandidates: [mock/a]\n")
    plan, warnings = load_plan(tmp_path, env={})
    (w,) = warnings
    assert (w.severity, w.line, w.path) == ("warning", 5, "providers.acme.api_key")
    assert "ACME_KEY" in w.message
    assert plan.default_policy == "default"


def test_duplicate_key_in_pool_is_a_warning():
    """Listing the same key twice in a pool is reported (it would double-count limits)."""
    from engine.compile.compiler import check_config
    from engine.config.project import load_data

    models = {
        "providers": {
            "acme": {
                "protocol": "openai",
                "base_url": "http://x",
                "api_key": "${K}",
                "keys": ["${K}"],
            }
        },
        "models": {"acme/big": {"context_window": 1000, "input_price": 1, "output_price": 1}},
    }
    _, found = check_config(load_data(models, ROUTES, env={"K": "same"}), {})
    assert [(d.severity, d.path) for d in found] == [("warning", "providers.acme.keys[0]")]


def test_price_source_and_price_ref_look_up_prices_under_other_names():
    """price_source and price_ref find genai-prices figures under other provider/model names."""
    models = {
        "providers": {
            "acme": {"protocol": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"},
            "mirror": {
                "protocol": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "api_key": "k",
                "price_source": "openai",
            },
        },
        "models": {
            "acme/mini": {"upstream": "gpt-4o-mini", "context_window": 128000},
            "mirror/mini": {"price_ref": "gpt-4o-mini"},
            "mirror/gpt-4o-mini": {},
        },
    }
    plan = build_plan_from_data(models, ROUTES)
    unpriced = plan.models["acme/mini"]
    referenced = plan.models["mirror/mini"]
    direct = plan.models["mirror/gpt-4o-mini"]
    assert unpriced.input_price is None
    assert referenced.input_price is not None and referenced.input_price > 0
    assert (referenced.input_price, referenced.output_price) == (
        direct.input_price,
        direct.output_price,
    )
