"""The analysis-result cache: keyed by what was run and the text's digest, least recently used dropped first."""

from __future__ import annotations

from addons.masking.cache import CACHE_ENTRIES, AnalysisCache
from addons.masking.protocol import Unit


def test_results_are_kept_by_kind_and_content_and_the_least_recent_goes_first() -> None:
    assert AnalysisCache().size == CACHE_ENTRIES == 50_000
    cache = AnalysisCache(size=2)
    both, patterns = AnalysisCache.key(Unit("Ana Lee")), AnalysisCache.key(Unit("Ana Lee", ner=False))
    assert both != patterns and AnalysisCache.key(Unit("Ana Lee")) == both
    assert "Ana" not in repr(both)  # a digest, never the text
    cache.put(both, [("PERSON", 0, 7, 0.85)])
    cache.put(patterns, [])
    assert cache.get(both) == [("PERSON", 0, 7, 0.85)]  # now the most recent
    cache.put(AnalysisCache.key(Unit("Bo Chen")), [("PERSON", 0, 7, 0.85)])
    assert len(cache) == 2 and cache.get(patterns) is None and cache.get(both) is not None
    cache.clear()
    assert len(cache) == 0
