"""Studiolo's built-in demo model (a small text-to-image model of a procedural 64x64 world)."""

from studiolo.engines.demo.engine import DEMO_MODEL_ID, DEMO_NOTICE, DemoEngine, weights_available

__all__ = ["DEMO_MODEL_ID", "DEMO_NOTICE", "DemoEngine", "weights_available"]
