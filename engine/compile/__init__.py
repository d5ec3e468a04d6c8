"""Compile time: config specs -> a frozen Plan (engine.plan), all defaults resolved.

build_plan(config_dir) -> Plan                       raises ConfigError
load_plan(config_dir) -> (Plan, [Diagnostic])         warnings too
build_plan_from_data(models, routes, source) -> Plan
(the run-time half, features_of and select, is engine.plan)
explain(plan, policy, request) -> dict; render_explain(dict) -> str
"""

from engine.compile.compiler import build_plan, build_plan_from_data, load_plan
from engine.plan.explain import explain, render_explain

__all__ = [
    "build_plan",
    "build_plan_from_data",
    "explain",
    "load_plan",
    "render_explain",
]
