"""Each tool's merge is associative and commutative, empty() is its identity, and merge
changes no accumulator but its first."""

from copy import deepcopy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tool_plugins.unused_fields import UnusedFields
from tool_plugins.unused_work_types import UnusedWorkTypes

# entity -> [uses in the window, latest use (or none), uses without a time, uses after as_of]
contributions = st.dictionaries(
    st.integers(1, 50).map(str),
    st.tuples(
        st.integers(0, 10**6),
        st.none() | st.integers(0, 2 * 10**9),
        st.integers(0, 10**3),
        st.integers(0, 10**3),
    ).map(list),
    max_size=20,
)
TOOLS = [UnusedFields(), UnusedWorkTypes()]


@pytest.mark.parametrize("tool", TOOLS, ids=lambda tool: tool.name)
@given(a=contributions, b=contributions, c=contributions)
def test_merge_is_associative(tool, a, b, c):
    left = tool.merge([tool.merge([deepcopy(a), deepcopy(b)]), deepcopy(c)])
    right = tool.merge([deepcopy(a), tool.merge([deepcopy(b), deepcopy(c)])])
    assert left == right == tool.merge([deepcopy(a), deepcopy(b), deepcopy(c)])


@pytest.mark.parametrize("tool", TOOLS, ids=lambda tool: tool.name)
@given(a=contributions, b=contributions)
def test_merge_is_commutative(tool, a, b):
    assert tool.merge([deepcopy(a), deepcopy(b)]) == tool.merge([deepcopy(b), deepcopy(a)])


@pytest.mark.parametrize("tool", TOOLS, ids=lambda tool: tool.name)
@given(a=contributions)
def test_empty_is_the_identity(tool, a):
    assert tool.merge([tool.empty(), deepcopy(a)]) == a
    assert tool.merge([deepcopy(a), tool.empty()]) == a
    assert tool.merge([tool.empty()]) == tool.empty()


@pytest.mark.parametrize("tool", TOOLS, ids=lambda tool: tool.name)
@given(a=contributions, b=contributions, c=contributions)
def test_merge_changes_no_accumulator_but_its_first(tool, a, b, c):
    before = (repr(b), repr(c))
    tool.merge([a, b, c])
    assert (repr(b), repr(c)) == before
