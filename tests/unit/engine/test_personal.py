"""Profile maths and pseudonymisation, without models."""

from __future__ import annotations

import numpy as np
import pytest

from kuamo.engine.errors import InvalidInput
from kuamo.engine.personal import Event, PersonalConfig, Pseudonymiser, decayed_add, validate_event


def test_decayed_sum_matches_the_closed_form_in_any_arrival_order() -> None:
    rng = np.random.default_rng(0)
    h = 3600.0
    events = [(rng.standard_normal(4), float(w), float(t)) for w, t in zip([1, 2, 4, 8, 1], [0, 100, 7200, 50, 9000],
                                                                             strict=True)]
    t_end = max(t for _, _, t in events)
    want_s = sum(w * 2 ** (-(t_end - t) / h) * v for v, w, t in events)
    want_w = sum(w * 2 ** (-(t_end - t) / h) for _, w, t in events)
    for order in (events, events[::-1], sorted(events, key=lambda e: e[2])):
        s, w, ref = np.zeros(4), 0.0, order[0][2]
        for v, wt, t in order:
            s, w, ref = decayed_add(s, w, ref, v, wt, t, h)
        f = 2 ** (-(t_end - ref) / h)  # bring to a common reference time
        np.testing.assert_allclose(s * f, want_s, rtol=1e-9)
        assert abs(w * f - want_w) < 1e-9


def test_pseudonyms_are_keyed_stable_and_hide_the_id(tmp_path) -> None:
    a = Pseudonymiser(b"k" * 32)
    assert a("alice") == a("alice") != a("bob")
    assert a("alice") != Pseudonymiser(b"j" * 32)("alice")
    assert "alice" not in a("alice") and "k" * 32 not in repr(a)
    p1 = Pseudonymiser.from_config(PersonalConfig(), tmp_path)
    p2 = Pseudonymiser.from_config(PersonalConfig(), tmp_path)  # key file reused across restarts
    assert p1("alice") == p2("alice")
    assert (tmp_path / "user.key").stat().st_mode & 0o077 == 0
    with pytest.raises(InvalidInput):
        Pseudonymiser(b"short")


@pytest.mark.parametrize(("event", "field"), [
    (Event(user_id="", product_id=1, kind="view"), "user_id"),
    (Event(user_id="u", product_id=-1, kind="view"), "product_id"),
    (Event(user_id="u", product_id=1, kind="like"), "kind"),
    (Event(user_id="u", product_id=1, kind="view", ts=float("nan")), "ts"),
    (Event(user_id="u", product_id=1, kind="view", ts=1e12), "ts"),
])
def test_bad_events_name_the_field(event, field) -> None:
    with pytest.raises(InvalidInput) as e:
        validate_event(event, PersonalConfig(), now=1.7e9, row=3)
    assert e.value.field == f"events[3].{field}"
