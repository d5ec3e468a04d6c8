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
