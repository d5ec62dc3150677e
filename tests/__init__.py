import pytest

# Helpers under tests/support assert too: give them pytest's detailed messages.
pytest.register_assert_rewrite("tests.support")
