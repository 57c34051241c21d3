"""Settings: read once from the environment (``STUDIOLO_`` prefix), validated, then injected.

Nothing in Studiolo reads the environment at import time; ``Settings()`` is built by the entry point
(app factory, CLI, worker) and passed down, so tests can build as many differently configured
instances as they like in one process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "studiolo"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STUDIOLO_", env_file=None, extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    data_dir: Path = Field(default_factory=_default_data_dir)
    # Empty means "SQLite file inside data_dir"; any SQLAlchemy URL otherwise.
    database_url: str = ""
    storage: Literal["local"] = "local"
    dispatch: Literal["inline"] = "inline"

    # Workers started inside `studiolo serve`; 0 means "a separate `studiolo worker` runs the jobs".
    inline_workers: int = Field(default=1, ge=0, le=64)
    worker_poll_seconds: float = Field(default=2.0, gt=0)
    lease_seconds: float = Field(default=60.0, gt=0)
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=20)
    retry_backoff_seconds: float = Field(default=2.0, ge=0)
    job_timeout_seconds: float = Field(default=1800.0, gt=0)

    default_model: str = "stabilityai/sd-turbo"
    # Register the model-free `echo` engine (tests, benchmarks, queue smoke checks).
    enable_echo_engine: bool = False
    # Seconds the echo engine spends per step, so queue behaviour (cancel, crash) can be observed mid-job.
    echo_step_delay: float = Field(default=0.0, ge=0, le=10)
    # Pipelines kept in memory at once are evicted least-recently-used beyond this many bytes.
    model_memory_budget_mb: int = Field(default=8192, ge=256)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    hub_timeout_seconds: float = Field(default=10.0, gt=0)

    max_pixels: int = Field(default=1024 * 1024 * 2, ge=64 * 64)
    max_images_per_job: int = Field(default=8, ge=1, le=64)
    max_prompt_chars: int = Field(default=2000, ge=1)
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    max_upload_pixels: int = Field(default=4096 * 4096, ge=64 * 64)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Seconds `serve` waits on open connections (event streams) after SIGTERM before closing them.
    shutdown_grace_seconds: float = Field(default=5.0, ge=0, le=600)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Cost accounting: credits charged per generated megapixel-step, reported on jobs and stats.
    cost_per_megapixel_step: float = Field(default=0.001, ge=0)

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if self.env == "production" and self.enable_echo_engine:
            raise ValueError("STUDIOLO_ENABLE_ECHO_ENGINE must not be set in production")
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError("STUDIOLO_HEARTBEAT_SECONDS must be shorter than STUDIOLO_LEASE_SECONDS")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'studiolo.db'}"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"
