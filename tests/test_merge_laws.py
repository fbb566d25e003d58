"""Each tool's merge is associative and commutative, and empty() is its identity."""

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
    assert tool.merge(tool.merge(a, b), c) == tool.merge(a, tool.merge(b, c))


@pytest.mark.parametrize("tool", TOOLS, ids=lambda tool: tool.name)
@given(a=contributions, b=contributions)
def test_merge_is_commutative(tool, a, b):
    assert tool.merge(a, b) == tool.merge(b, a)


@pytest.mark.parametrize("tool", TOOLS, ids=lambda tool: tool.name)
@given(a=contributions)
def test_empty_is_the_identity(tool, a):
    assert tool.merge(tool.empty(), a) == a
    assert tool.merge(a, tool.empty()) == a


@pytest.mark.parametrize("tool", TOOLS, ids=lambda tool: tool.name)
@given(a=contributions, b=contributions)
def test_merge_does_not_mutate_its_inputs(tool, a, b):
    before = (repr(a), repr(b))
    tool.merge(a, b)
    assert (repr(a), repr(b)) == before
