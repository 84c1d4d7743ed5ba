"""Property-based: any input gives either a clear InputError or a complete, valid ranking."""

from __future__ import annotations

import itertools
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llmrerank import BackendUnavailable, Candidate, Funnel, InputError
from llmrerank.testing import ScriptedScorer

texts = st.text(max_size=300) | st.just("") | st.text(alphabet=" \n\t\x00", max_size=5)
cands = st.lists(
    st.builds(Candidate, id=st.text(max_size=4), text=texts),
    max_size=25,
)


def _flaky(call: int):
    return BackendUnavailable("flaky") if call % 3 == 0 else None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    query=st.text(max_size=50),
    candidates=cands,
    k=st.integers(min_value=0, max_value=40),
    deadline=st.none() | st.floats(min_value=0.001, max_value=0.05),
)
def test_any_input_is_a_clear_error_or_a_complete_ranking(query, candidates, k, deadline):
    funnel = Funnel(llm=ScriptedScorer(lambda q, t: float(len(t) % 7), fail=_flaky), k=k)
    try:
        ranking = funnel.rerank(query, candidates, deadline=deadline)
    except InputError as exc:
        assert str(exc)
        return
    ids = ranking.ids
    assert sorted(ids) == sorted(c.id for c in candidates)
    assert len(set(ids)) == len(ids)
    assert all(math.isfinite(r.score) for r in ranking)
    scores = [r.score for r in ranking]
    assert all(a >= b for a, b in itertools.pairwise(scores))
