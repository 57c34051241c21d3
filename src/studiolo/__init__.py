"""Studiolo: a self-hosted, multi-user AI creative studio."""

__version__ = "0.1.0"
