"""The batch form of DRF's CharField check gives exactly what the one-value form gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from openmaac.common.validation import char_field, char_fields

VALUES = st.one_of(st.text(max_size=40), st.text(alphabet="Uabcdef0123456789", min_size=1, max_size=40),
                   st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False))


@given(st.lists(VALUES, max_size=30), st.integers(min_value=1, max_value=40))
def test_char_fields_equals_char_field_of_each(values: list[object], max_length: int) -> None:
    assert char_fields(values, max_length=max_length) == [char_field(v, max_length=max_length) for v in values]


def test_plain_ids_take_the_one_pass_path_and_a_bad_one_is_still_named() -> None:
    ids = ["U" + "a" * 32] * 3
    assert char_fields(ids, max_length=33) == [(i, []) for i in ids]
    assert char_fields([*ids, " U1 ", "x" * 34], max_length=33)[3:] == [
        ("U1", []), (None, ["Ensure this field has no more than 33 characters."])]
