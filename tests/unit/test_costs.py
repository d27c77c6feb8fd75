"""Cost accounting: GPU-hours x the node's price per GPU-hour, with the price found in
order (the launch's recorded price, the pool's own, the catalog's, a node label), clipped
to a usage window, and never shown as free when some of it ran on an unpriced node."""

from __future__ import annotations

import pytest

from corral.providers.catalog import load_catalog
from corral.server.services.costs import Run, Tally, price_per_node_hour
from corral.spec.pool import NodePoolSpec

CATALOG = load_catalog()
SPOT = NodePoolSpec(name="p5", provider="aws", type="p5.48xlarge", region="us-east-1", spot=True)


@pytest.mark.parametrize(
    ("labels", "launched", "pool", "expected"),
    [
        ({}, 50.0, SPOT, 50.0),  # the price of the day it launched wins
        ({}, None, SPOT.model_copy(update={"price": 20.0}), 20.0),  # the pool's own
        ({}, None, SPOT, 39.33),  # the catalog's spot price there
        ({}, None, SPOT.model_copy(update={"spot": False}), 98.32),  # on demand
        ({}, None, SPOT.model_copy(update={"region": "mars-1"}), None),  # not in the catalog
        ({"price-per-hour": "3.5"}, None, None, 3.5),  # a node outside any pool
        ({"price-per-hour": "cheap"}, None, None, None),
        ({"price-per-hour": "-1"}, None, None, None),
        ({}, None, None, None),
    ],
)
def test_the_node_price_is_found_in_order(
    labels: dict[str, str],
    launched: float | None,
    pool: NodePoolSpec | None,
    expected: float | None,
) -> None:
    assert price_per_node_hour(labels, launched, pool, CATALOG) == expected


def test_a_tally_counts_gpu_hours_and_dollars_and_clips_to_the_window() -> None:
    tally = Tally()
    tally.add(Run("n1", gpus=4, started_at=0.0, ended_at=5580.0), per_gpu_hour=2.0)
    assert tally.view().model_dump() == {"gpu_hours": 6.2, "usd": 12.4, "unpriced_gpu_hours": 0.0}
    window = Tally()
    window.add(Run("n1", gpus=2, started_at=0.0, ended_at=7200.0), 1.0, since=3600.0)
    assert (window.view().gpu_hours, window.view().usd) == (2.0, 2.0)


def test_gpu_hours_on_an_unpriced_node_leave_the_cost_unknown_not_free() -> None:
    tally = Tally()
    tally.add(Run("n1", gpus=1, started_at=0.0, ended_at=3600.0), 10.0)
    tally.add(Run("n2", gpus=1, started_at=0.0, ended_at=1800.0), None)
    view = tally.view()
    assert (view.gpu_hours, view.usd, view.unpriced_gpu_hours) == (1.5, None, 0.5)


def test_the_cost_line_says_why_there_is_no_total() -> None:
    from types import SimpleNamespace

    from corral.cli.jobview import cost_text
    from corral.wire.pools import CostView

    def line(cost: CostView) -> str | None:
        return cost_text(SimpleNamespace(cost=cost))  # type: ignore[arg-type]

    assert line(CostView(gpu_hours=6.2, usd=12.4)) == "$12.40 (6.2 GPU-hours)"
    assert line(CostView(gpu_hours=0.002, usd=None, unpriced_gpu_hours=0.002)) == (
        "0.002 GPU-hours; its nodes have no price (pool --price, or CORRAL_CATALOG)"
    )
    assert line(CostView(gpu_hours=3.0, usd=None, unpriced_gpu_hours=1.0)) == (
        "3.0 GPU-hours; 1.0 of them on nodes with no price, so no total"
    )
