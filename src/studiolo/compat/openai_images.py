"""Placeholder until issue 18's face lands (routes are added here)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
