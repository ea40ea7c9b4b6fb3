"""Fixtures of the inversion tests."""
import pytest

from tests.helpers import calibrated_teacher


@pytest.fixture(scope="module")
def teacher():
    return calibrated_teacher()
