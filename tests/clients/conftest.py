"""The in-process proxy rig of tests/web, for tests that drive it with real client libraries."""

from tests.web.conftest import make_rig

__all__ = ["make_rig"]
