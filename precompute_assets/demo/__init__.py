"""The demo: a Jira-like multi-tenant source (``source``), the catalogue of its spaces that
space-scoped tools share (``Spaces``), and ``run`` that seeds the source and computes every
report."""

from precompute_assets.demo.spaces import Spaces

__all__ = ["Spaces"]
