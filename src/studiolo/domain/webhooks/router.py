"""Placeholder until issue 18's webhook routes land."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
