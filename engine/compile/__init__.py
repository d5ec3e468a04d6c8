"""Compile time: config specs -> a frozen Plan, and the pure per-request selection over it.

build_plan(config_dir) -> Plan                       raises ConfigError
load_plan(config_dir) -> (Plan, [Diagnostic])         warnings too
build_plan_from_data(models, routes, source) -> Plan
features_of(request) -> Features
select(plan, policy, features) -> Selection          pure, microseconds
explain(plan, policy, request) -> dict; render_explain(dict) -> str
"""

from engine.compile.compiler import build_plan, build_plan_from_data, load_plan
from engine.compile.explain import explain, render_explain
from engine.compile.features import features_of
from engine.compile.select import select

__all__ = [
    "build_plan",
    "build_plan_from_data",
    "explain",
    "features_of",
    "load_plan",
    "render_explain",
    "select",
]
