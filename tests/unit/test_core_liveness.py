"""core.liveness: a silent node is lost after the silence bound; a node whose connection
closed is lost after the (shorter) closed bound only when its agent keeps a lifeline and
nothing of it spoke since — an agent restarting (its lifeline speaking) never is."""

from __future__ import annotations

from corral.core.liveness import LivenessFacts, NodeSilence, decide

SILENCE = 8.0
CLOSED = 2.5


def _facts(*nodes: NodeSilence) -> LivenessFacts:
    return LivenessFacts(
        nodes=nodes,
        running=(),
        recheck=(),
        lost_after_s=SILENCE,
        alive_since=0.0,
        closed_lost_after_s=CLOSED,
    )


def _lost(node: NodeSilence, now: float) -> bool:
    return [n.id for n in decide(_facts(node), now).lost] == [node.id]


def test_a_closed_connection_with_a_silent_lifeline_is_a_dead_host() -> None:
    node = NodeSilence("n", last_heard=99.9, closed_at=100.0, lifeline=True)
    assert not _lost(node, 100.0 + CLOSED - 0.01)
    assert _lost(node, 100.0 + CLOSED)
    (lost,) = decide(_facts(node), 103.0).lost
    assert lost.cutoff == 100.0, "lost only if not heard from since the close"


def test_a_lifeline_that_spoke_since_the_close_is_an_agent_restarting() -> None:
    node = NodeSilence("n", last_heard=99.9, closed_at=100.0, lifeline=True, lifeline_at=100.7)
    assert not _lost(node, 105.0)
    assert _lost(node, 99.9 + SILENCE + 0.1), "the silence bound still holds"


def test_an_agent_without_a_lifeline_is_lost_by_silence_only() -> None:
    node = NodeSilence("n", last_heard=99.9, closed_at=100.0, lifeline=False)
    assert not _lost(node, 105.0)
    assert _lost(node, 108.0)


def test_a_node_heard_after_the_close_reconnected() -> None:
    node = NodeSilence("n", last_heard=101.0, closed_at=100.0, lifeline=True)
    assert not _lost(node, 104.0)


def test_without_a_closed_bound_only_silence_counts() -> None:
    node = NodeSilence("n", last_heard=99.9, closed_at=100.0, lifeline=True)
    facts = LivenessFacts((node,), (), (), SILENCE, 0.0, closed_lost_after_s=None)
    assert decide(facts, 105.0).lost == ()
