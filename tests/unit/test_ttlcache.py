"""TtlCache: entries expire after their time; the oldest half goes when it is full."""

from __future__ import annotations

from corral.server.ttlcache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_its_ttl_and_no_longer() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(10.0, clock=clock)
    cache.put("a", 1)
    clock.now += 9.9
    assert cache.get("a") == 1
    clock.now += 0.2
    assert cache.get("a") is None
    assert cache.get("never") is None


def test_a_full_cache_drops_its_oldest_half() -> None:
    cache: TtlCache[int, int] = TtlCache(10.0, max_entries=4, clock=Clock())
    for i in range(5):
        cache.put(i, i)
    assert [cache.get(i) for i in range(5)] == [None, None, 2, 3, 4]
