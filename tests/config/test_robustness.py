"""Bad input of any shape yields diagnostics, never an exception (fuzzed with hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.compile.compiler import check_config
from engine.config.load import load_text
from engine.config.project import load_data

KEYS = ["strategy", "rules", "when", "feature", "eq", "gt", "in", "all", "any", "not", "policy", "candidates",
        "filters", "fallback", "chain", "budget", "template", "system", "variables", "extends", "providers",
        "models", "protocol", "api_key", "keys", "context_window", "capabilities", "weights", "x"]  # fmt: skip
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=True),
    st.sampled_from(["mock", "mock/a", "default", "cost_optimized", "task_type", "input_tokens", "{{ x", "${V}", ""]),
    st.text(max_size=8),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)
BASE_MODELS: dict[str, Any] = {
    "providers": {"mock": {"protocol": "mock"}},
    "models": {"mock/a": {"context_window": 100}},
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5))
def test_any_route_shape_gives_diagnostics_not_exceptions(route):
    """An arbitrary route mapping is either accepted or reported; check_config never raises."""
    check_config(
        load_data(BASE_MODELS, {"p": route, "default": {"strategy": "ordered"}}, env={}), {}
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES)
def test_any_models_shape_gives_diagnostics_not_exceptions(models):
    """An arbitrary models document is either accepted or reported; check_config never raises."""
    data = models if isinstance(models, dict) else {"providers": models}
    check_config(load_data(data, {"default": {"strategy": "ordered"}}, env={}), {})


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:- {}[]&*!|>'\"#%@`,?\n\t0.9")), max_size=60))
def test_any_text_loads_without_exceptions(text):
    """Arbitrary YAML-ish text loads to data or diagnostics, never an exception."""
    load_text(text, "fuzz.yaml")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5))
def test_schema_and_spec_models_agree(route):
    """The committed JSON Schema accepts exactly what the typed spec accepts (no silent gaps)."""
    from pydantic import ValidationError

    from engine.config.schema import _validator
    from engine.config.specs import PolicySpec

    schema_ok = _validator("route").is_valid(route)
    try:
        PolicySpec.model_validate(route, strict=True)
        spec_ok = True
    except ValidationError:
        spec_ok = False
    assert schema_ok == spec_ok


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.nested_given],
)
@given(st.data())
def test_schema_and_spec_agree_on_near_valid_policies(data):
    """Valid generated policies with one field replaced by junk: schema and spec agree."""
    from pydantic import ValidationError

    from engine.config.schema import _validator
    from engine.config.specs import PolicySpec
    from tests.compile.test_properties import policies

    route = data.draw(policies(["mock/a", "mock/b"]))
    if data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(route)))
        route[key] = data.draw(VALUES)
    rules = route.get("rules")
    if (
        isinstance(rules, list)
        and rules
        and isinstance(rules[0], dict)
        and data.draw(st.booleans())
    ):
        rule = rules[0]
        rule[data.draw(st.sampled_from(["when", "strategy", "x", "budget"]))] = data.draw(VALUES)
    schema_ok = _validator("route").is_valid(route)
    try:
        PolicySpec.model_validate(route, strict=True)
        spec_ok = True
    except ValidationError:
        spec_ok = False
    assert schema_ok == spec_ok, route
