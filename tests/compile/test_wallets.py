"""Which caps a try is held to and where its spend is booked, for each way of declaring
workspace budgets (engine/plan/wallets.py, compiled by engine/compile/workspaces.py)."""

from __future__ import annotations

from typing import Any

from engine.compile.compiler import build_plan_from_data

MODELS: dict[str, Any] = {
    "providers": {"mock": {"protocol": "mock"}},
    "models": {"mock/fast": {"capabilities": ["chat"], "context_window": 8000}},
}
CAPPED = {"candidates": ["mock/fast"], "budget": {"daily_usd": 5.0, "monthly_usd": 50.0}}
LOOSE = {"candidates": ["mock/fast"], "budget": {"daily_usd": 90.0}}
FREE = {"candidates": ["mock/fast"]}


def plan(workspaces: dict[str, Any] | None = None) -> Any:
    models = MODELS if workspaces is None else {**MODELS, "workspaces": workspaces}
    return build_plan_from_data(models, {"capped": CAPPED, "loose": LOOSE, "free": FREE})


def test_without_workspaces_the_tightest_policy_caps_fill_in_per_period() -> None:
    """No `workspaces:`: a try whose policy sets no cap of a period gets the tightest any
    policy sets; a policy's own cap of that period stays its own (it may be looser)."""
    wallet = plan().wallets.of("anyone")
    assert wallet.bucket is None  # booked under the caller's own name
    assert wallet.caps(None, None) == (5.0, 50.0)  # a pin, a bare name, `free`
    assert wallet.caps(90.0, None) == (90.0, 50.0)  # `loose`: its daily, the monthly filled


def test_listed_names_take_the_tighter_and_others_share_the_pool() -> None:
    """A listed name: the tighter of its caps and the policy's, booked under its name;
    any other name: the `*` pool's caps, booked under `*`."""
    wallets = plan({"team": {"daily_usd": 2.0}, "*": {"daily_usd": 1.0, "monthly_usd": 9.0}})
    team, stranger = wallets.wallets.of("team"), wallets.wallets.of("made-up")
    assert team.bucket == "team" and team.caps(5.0, 50.0) == (2.0, 50.0)
    assert team.caps(None, None) == (2.0, None)
    assert stranger.bucket == "*" and stranger.caps(90.0, None) == (1.0, 9.0)
    assert wallets.wallets.bucket("made-up") == wallets.wallets.bucket("other") == "*"


def test_listed_names_without_a_pool_leave_others_to_their_policies() -> None:
    """With names listed but no `*`, another name is held only by its policy's caps."""
    wallet = plan({"team": {"monthly_usd": 3.0}}).wallets.of("made-up")
    assert wallet.bucket is None and wallet.caps(None, None) == (None, None)
    assert wallet.caps(5.0, 50.0) == (5.0, 50.0)
