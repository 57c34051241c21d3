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
    storage: Literal["local", "s3"] = "local"
    # S3-compatible storage (storage="s3", docs/deployment.md). The bucket stays private: browsers download
    # through presigned URLs that expire after s3_presign_seconds.
    s3_bucket: str = ""
    s3_prefix: str = ""  # keys live under "<prefix>/" inside the bucket; empty: at its top
    s3_endpoint_url: str = ""  # empty: AWS; e.g. http://minio:9000 or https://<account>.r2.cloudflarestorage.com
    s3_region: str = "us-east-1"  # R2 wants "auto"
    # Both empty: boto3's default credential chain (AWS_* variables, ~/.aws, an instance or pod role).
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"  # MinIO needs "path"
    s3_presign_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)  # SigV4 allows at most 7 days
    # Bodies at least this large go up as multipart uploads (parts of max(threshold, 5 MiB)).
    s3_multipart_threshold_mb: int = Field(default=16, ge=1, le=5 * 1024)
    # Create the bucket at start-up when missing (development, tests); production buckets are made by hand.
    s3_create_bucket: bool = False
    # "inline": worker threads poll the database (one machine). "celery": `studiolo worker` processes on any
    # number of machines receive job tokens through a broker (Redis or RabbitMQ); see dispatch/celery.py.
    dispatch: Literal["inline", "celery"] = "inline"
    broker_url: str = ""  # empty: STUDIOLO_REDIS_URL, else redis://localhost:6379/0
    # How often a Celery worker's sweeper compares ready jobs with broker messages and re-dispatches lost ones.
    sweep_seconds: float = Field(default=2.0, gt=0, le=300)
    # Only jobs ready for at least this long count as missing their token: a job committed a moment ago may have its
    # token still on the way (an API process publishing a burst), and re-sending it would only make an empty claim.
    sweep_grace_seconds: float = Field(default=10.0, ge=0, le=3600)

    # Workers started inside `studiolo serve`; 0 means "a separate `studiolo worker` runs the jobs".
    inline_workers: int = Field(default=1, ge=0, le=64)
    worker_poll_seconds: float = Field(default=2.0, gt=0)
    # How often `studiolo worker` re-reads the installed models and checks which have their files on its machine:
    # it starts taking jobs for newly installed models, and stops for models whose files are gone (served.py).
    worker_refresh_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Workers whose jobs take milliseconds (a no-op engine, a tiny model) claim several at once and store them in one
    # transaction: as many as they finish in about claim_batch_seconds by their recent pace, at most claim_batch_max
    # (1: one job at a time). A model without a measured pace, or slower than that, is claimed one job at a time.
    claim_batch_max: int = Field(default=32, ge=1, le=256)
    claim_batch_seconds: float = Field(default=0.1, gt=0, le=10)
    lease_seconds: float = Field(default=60.0, gt=0)
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=20)
    retry_backoff_seconds: float = Field(default=2.0, ge=0)
    # Queue positions are counted exactly this far; a job further back reads this number, flagged as capped (each
    # count reads the rows it counts, so an unbounded one cost every submit and poll O(queue length)).
    queue_position_limit: int = Field(default=1000, ge=1, le=1_000_000)
    job_timeout_seconds: float = Field(default=1800.0, gt=0)
    # How often one worker process sweeps the store for files that no image or job refers to (0: never), and how
    # old such a file must be to go: younger ones may belong to a row that is committing right now.
    orphan_sweep_seconds: float = Field(default=3600.0, ge=0)
    orphan_grace_seconds: float = Field(default=3600.0, ge=1)
    # Deleted images wait in the Trash this many days before housekeeping purges them (0: at its next run), which
    # looks for due ones every trash_purge_seconds, at most TRASH_PURGE_BATCH per transaction (gallery/trash.py).
    trash_days: int = Field(default=30, ge=0, le=36500)
    trash_purge_seconds: float = Field(default=600.0, gt=0)

    default_model: str = "stabilityai/sd-turbo"
    # Register the model-free `echo` engine (tests, benchmarks, queue smoke checks).
    enable_echo_engine: bool = False
    # Seconds the echo engine spends per step, so queue behaviour (cancel, crash) can be observed mid-job.
    echo_step_delay: float = Field(default=0.0, ge=0, le=10)
    # Pipelines kept in memory at once are evicted least-recently-used beyond this many bytes.
    model_memory_budget_mb: int = Field(default=8192, ge=256)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # How Stable Diffusion models run on a CPU (issue 20, docs/performance.md): "auto" picks the fastest path this
    # machine has (OpenVINO, else torch bf16 where the CPU computes bf16 natively) that passes the quality gate
    # against fp32; "openvino" or "bf16" forces one; "off" runs fp32 as loaded. Conversions are cached under
    # <data dir>/cache/accel.
    cpu_accel: Literal["auto", "openvino", "bf16", "off"] = "auto"
    # torch/OpenMP and OpenVINO threads per diffusers job (0: one per physical core this process may use).
    torch_threads: int = Field(default=0, ge=0, le=1024)
    # Workers load the default model in the background as they start (a local diffusers model only), so the first
    # job does not wait for torch, diffusers and the model to load (issue 20: ~7 s for SD-Turbo on a 2-core CPU).
    preload_default_model: bool = True
    # CUDA only: compile the UNet with torch.compile ("max-autotune" also captures CUDA graphs); off by default
    # because compiling costs minutes at every start.
    gpu_compile: Literal["off", "default", "max-autotune"] = "off"
    # torch threads per demo-model job (0: torch's default, one per core). One: its many small operations made
    # two threads wait for each other, 16x slower on a busy 2-core machine (issue 13, bench/demo.py).
    demo_threads: int = Field(default=1, ge=0, le=256)
    # Live previews on job event streams (a small WebP at most twice a second while someone watches).
    previews: bool = True
    hub_timeout_seconds: float = Field(default=10.0, gt=0)

    max_pixels: int = Field(default=1024 * 1024 * 2, ge=64 * 64)
    max_images_per_job: int = Field(default=8, ge=1, le=64)
    # Items in one POST /generations/batch; each also counts against STUDIOLO_RATE_LIMIT_GENERATE.
    max_batch_submissions: int = Field(default=100, ge=1, le=1000)
    max_prompt_chars: int = Field(default=2000, ge=1)
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    max_upload_pixels: int = Field(default=4096 * 4096, ge=64 * 64)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Seconds `serve` waits on open connections after SIGTERM before closing them (job event streams end at once).
    shutdown_grace_seconds: float = Field(default=5.0, ge=0, le=600)
    # `serve` facing clients directly (server.py; docs/deployment.md, "Timeouts and limits"): a request's line and
    # headers must arrive within the header timeout (counted from connecting, or from its first byte), hold at most
    # so many bytes and headers; a body may pause for the body timeout at most and must then average the minimum
    # rate; an idle connection between requests is closed after the keep-alive time.
    http_header_timeout_seconds: float = Field(default=20.0, gt=0, le=3600)
    http_body_timeout_seconds: float = Field(default=20.0, gt=0, le=3600)
    http_body_min_bytes_per_second: int = Field(default=500, ge=0)
    http_keep_alive_seconds: int = Field(default=5, ge=1, le=3600)
    http_max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    http_max_headers: int = Field(default=100, ge=10, le=10_000)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # "json": one JSON object per line with request and job ids, for log pipelines (studiolo/logs.py).
    log_format: Literal["text", "json"] = "text"
    # `studiolo worker` serves its Prometheus metrics on this port (0: not at all); API processes use /metrics.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    # Each dependency /ready checks gets this long (they are checked at once); keep it under the probe's timeout.
    ready_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    # Cost accounting: credits charged per generated megapixel-step, reported on jobs and stats.
    cost_per_megapixel_step: float = Field(default=0.001, ge=0)

    # Billing (issue 15, docs/billing.md). "off": no limits and nothing shown (a single-user install); "quotas": plans
    # and credits assigned by an administrator (a team server, no payments); "stripe": plus self-service payments.
    billing: Literal["off", "quotas", "stripe"] = "off"
    # A TOML or JSON plan catalogue applied at start (plans it names are created or updated); empty: the defaults.
    billing_plans_file: Path | None = None
    billing_default_plan: str = "free"  # the plan of a new account, and of one whose subscription ended
    # Usage records older than this are rolled up per day and deleted; at least 32 so a monthly window is never cut.
    usage_retention_days: int = Field(default=90, ge=32, le=36500)
    stripe_secret_key: str = ""
    stripe_webhook_secret: str = ""
    stripe_api_base: str = ""  # empty: Stripe's own; tests point it at a local server speaking Stripe's API
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1, le=86400)

    # Film studio (issue 16, docs/film.md).
    film_enabled: bool = True  # workers render films only where ffmpeg is found (engines/ffmpeg.py)
    film_max_words: int = Field(default=500, ge=10, le=20000)  # seed 002's script limit
    film_credits_per_minute: int = Field(default=6, ge=0, le=100000)  # the video part of a render's quote
    film_ffmpeg: str = ""  # an ffmpeg binary; empty: the system's if newer, else imageio-ffmpeg's
    film_piper_voices_dir: Path | None = None  # more Piper voices (*.onnx + *.onnx.json)
    film_speech_api_base: str = ""  # an OpenAI-compatible /v1/audio/speech server for hosted voices; empty: none
    film_speech_api_key: str = ""
    film_chat_api_base: str = ""  # an OpenAI-compatible chat server that may rewrite scenes into prompts; empty: none
    film_chat_api_key: str = ""
    film_chat_model: str = "gpt-4o-mini"
    film_chat_timeout_seconds: float = Field(default=60.0, gt=0, le=600)  # a create/resplit waits at most this
    film_soundfont: Path | None = None  # a General MIDI .sf2 for fluidsynth music; empty: the procedural synth
    film_youtube_api_base: str = "https://www.googleapis.com"  # tests point it at a local server

    # Photo to character (issue 17, docs/describe.md). "offline": the attribute extractor that needs no weights
    # (understanding/offline.py); "openai": any OpenAI-compatible chat server with image input (OpenAI, Ollama, vLLM,
    # LM Studio); "gemini": Google's generateContent API.
    describer: Literal["offline", "openai", "gemini"] = "offline"
    describe_api_base: str = ""  # openai: e.g. https://api.openai.com/v1 or http://localhost:11434/v1; gemini: empty
    describe_api_key: str = ""
    describe_model: str = ""  # empty: gpt-4o-mini (openai), gemini-2.5-flash (gemini)
    describe_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    describe_retries: int = Field(default=2, ge=0, le=10)  # more tries after a 429, a 5xx or a timeout
    describe_credits: int = Field(default=0, ge=0, le=100000)  # billing on: what one description costs
    gemini_api_base: str = "https://generativelanguage.googleapis.com"  # tests point it at a local server

    # Moderation (issue 17, docs/safety.md#moderation). Prompts: a per-install blocklist (one word or /regex/ a line),
    # the packaged alt-profanity-check classifier above a threshold (1.0: off), an optional OpenAI-compatible
    # /moderations endpoint. Outputs: the packaged open_nsfw classifier, and what happens above its threshold.
    moderation_blocklist_file: Path | None = None
    # Off by default: the model knows insults, not content, and refuses "a stupid dog" or "a naked mole rat" at any
    # useful threshold (docs/safety.md); 0.9 suits a community that wants abusive language refused.
    moderation_profanity_threshold: float = Field(default=1.0, ge=0.0, le=1.0)
    moderation_api_base: str = ""  # e.g. https://api.openai.com/v1; empty: no hosted check
    moderation_api_key: str = ""
    moderation_api_model: str = "omni-moderation-latest"
    moderation_api_timeout_seconds: float = Field(default=5.0, gt=0.0, le=60.0)  # a submit waits for it
    # When the hosted check fails (timeout, 429, 5xx): false lets the prompt through with a logged warning (the local
    # checks still ran), true refuses it with 503 moderation_unavailable (docs/safety.md#prompt-moderation).
    moderation_api_fail_closed: bool = False
    nsfw_check: bool = True
    nsfw_threshold: float = Field(default=0.8, ge=0.0, le=1.0)
    # allow: keep it, score stored; blur: blurred thumbnails, original private until an admin approves; block: not
    # stored. A plan's nsfw_policy, when set, overrides this for its subscribers.
    nsfw_policy: Literal["allow", "blur", "block"] = "blur"

    # Watermarks (issue 17). Visible: "plan" follows the plan's watermark flag (billing on), "always" / "never".
    watermark_visible: Literal["plan", "always", "never"] = "plan"
    watermark_text: str = Field(default="Made with Studiolo", max_length=80)
    watermark_logo: Path | None = None  # a PNG with alpha drawn instead of the text
    watermark_position: Literal["bottom-right", "bottom-left", "top-right", "top-left", "center"] = "bottom-right"
    watermark_opacity: float = Field(default=0.6, gt=0.0, le=1.0)
    watermark_scale: float = Field(default=0.25, gt=0.0, le=1.0)  # width, as a share of sqrt(width x height)
    # Invisible (DWT-DCT, safety/invisible.py): on every image of at least 256x256; empty payload: a per-install one.
    watermark_invisible: bool = True
    watermark_payload: str = Field(default="", max_length=8)

    # C2PA Content Credentials (issue 17, safety/provenance.py). Without a certificate and key, a self-signed
    # per-install pair is made on first use under the data directory ("untrusted until you configure a real one").
    c2pa_enabled: bool = True
    c2pa_cert_file: Path | None = None  # PEM chain: signing certificate first
    c2pa_key_file: Path | None = None  # PEM private key (PKCS#8)
    c2pa_tsa_url: str = ""  # an RFC 3161 time-stamp authority; empty: none
    c2pa_trust_anchors_file: Path | None = None  # PEM roots the verifier trusts besides this install's own

    # The ecosystem faces (issue 18, docs/compatibility.md): the OpenAI Images API under /v1/images and AUTOMATIC1111's
    # /sdapi/v1, translated onto the same queue. A call blocks until its job ends, at most this long (the job goes on
    # into the gallery when the client leaves or the wait ends).
    compat_wait_seconds: float = Field(default=600.0, gt=0, le=3600)
    # Signed links to stored images (OpenAI's response_format=url, webhook outputs) live this long.
    signed_url_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)

    # Webhooks (issue 18, docs/webhooks.md): Standard Webhooks signatures, delivered from a durable outbox.
    webhooks_enabled: bool = True
    # Receivers on private, loopback or link-local addresses are refused unless this is true (tests, a LAN install).
    webhooks_allow_private: bool = False
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, le=60)
    webhook_retry_hours: float = Field(default=24.0, gt=0, le=24 * 7)  # then the message fails and the endpoint
    # is disabled (with an email) when it has failed that long
    webhook_progress_seconds: float = Field(default=0.5, ge=0.1, le=60)  # job.progress at most this often
    webhook_secret_grace_hours: float = Field(default=24.0, ge=0, le=24 * 30)  # a rotated secret still signs
    webhook_poll_seconds: float = Field(default=1.0, gt=0, le=60)  # the deliverer's fallback sweep

    # Hosted image providers as engines (issue 18, engines/remote, docs/compatibility.md#hosted-providers). A provider
    # is offered when its key (or, for servers of your own, its base URL) is set; `studiolo models add-remote`
    # registers its models. Keys stay in settings: never in the database, never in logs.
    provider_openai_api_key: str = ""
    provider_openai_base_url: str = "https://api.openai.com/v1"  # or LocalAI, vLLM-Omni, another Studiolo
    provider_gemini_api_key: str = ""
    provider_gemini_base_url: str = "https://generativelanguage.googleapis.com"
    provider_stability_api_key: str = ""
    provider_stability_base_url: str = "https://api.stability.ai"
    provider_replicate_api_token: str = ""
    provider_replicate_base_url: str = "https://api.replicate.com"
    provider_fal_api_key: str = ""
    provider_fal_base_url: str = "https://queue.fal.run"
    provider_pollinations_enabled: bool = False  # keyless: off until asked for
    provider_pollinations_token: str = ""
    provider_pollinations_base_url: str = "https://image.pollinations.ai"
    provider_a1111_base_url: str = ""  # another AUTOMATIC1111 (or Forge) server as a worker
    provider_a1111_auth: str = ""  # its --api-auth "user:password"
    provider_comfyui_base_url: str = ""  # a ComfyUI server as a worker
    provider_timeout_seconds: float = Field(default=120.0, gt=0, le=3600)  # one HTTP call
    provider_max_retries: int = Field(default=4, ge=0, le=20)  # after a 429, a 5xx, a timeout or a dropped link
    provider_breaker_failures: int = Field(default=5, ge=1, le=1000)  # in a row: the provider is skipped ...
    provider_breaker_seconds: float = Field(default=30.0, gt=0, le=3600)  # ... for this long

    # Accounts. "accounts": every API call needs a session or an API key (the default). "none": a trusted
    # single-user machine where every request acts as the built-in local owner (no sign-in), as ComfyUI does.
    auth_mode: Literal["accounts", "none"] = "accounts"
    # Signs access tokens, OAuth state and the setup link. Empty: a random key kept in data_dir/secret.key
    # (so every process sharing the data directory agrees); set it when API processes run on several machines.
    secret_key: str = ""
    public_url: str = ""  # how users reach this server (links in emails, OAuth redirects); default: the request's
    access_token_minutes: int = Field(default=15, ge=1, le=24 * 60)
    refresh_token_days: int = Field(default=30, ge=1, le=365)
    # "auto": Secure cookies except on plain-http non-localhost addresses (where browsers would drop them).
    cookie_secure: Literal["auto", "always", "never"] = "auto"
    # argon2id cost: 64 MiB and 2 passes, measured 60-95 ms per hash on the project's 2-core CPUs (bench/auth.py).
    argon2_time_cost: int = Field(default=2, ge=1, le=20)
    argon2_memory_kib: int = Field(default=65536, ge=8, le=2**21)
    argon2_parallelism: int = Field(default=1, ge=1, le=16)
    verification_code_minutes: int = Field(default=15, ge=1, le=24 * 60)
    verification_code_attempts: int = Field(default=5, ge=1, le=20)
    resend_code_seconds: int = Field(default=60, ge=0, le=3600)
    # Failed logins per email before the account is locked, and for how long.
    lockout_failures: int = Field(default=10, ge=1, le=1000)
    lockout_minutes: int = Field(default=15, ge=1, le=24 * 60)
    # Rate limits ("N per minute"-style strings of the `limits` library); generous for humans, tight for scripts.
    rate_limit_login: str = "10/minute"
    rate_limit_register: str = "5/minute;20/hour"
    rate_limit_code: str = "10/minute"
    rate_limit_reset: str = "5/minute;20/hour"
    rate_limit_generate: str = "120/minute"
    rate_limits_enabled: bool = True
    # Shared counters for several API processes; empty keeps them in memory (one process).
    redis_url: str = ""
    # Email: "console" writes messages (and their codes) to the server log; "smtp" sends them.
    mailer: Literal["console", "smtp"] = "console"
    mail_from: str = "Studiolo <studiolo@localhost>"
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_timeout_seconds: float = Field(default=15.0, gt=0)
    # OAuth / OpenID Connect sign-in: a provider is offered when its client id is set.
    google_client_id: str = ""
    google_client_secret: str = ""
    google_discovery_url: str = "https://accounts.google.com/.well-known/openid-configuration"
    github_client_id: str = ""
    github_client_secret: str = ""
    github_authorize_url: str = "https://github.com/login/oauth/authorize"
    github_token_url: str = "https://github.com/login/oauth/access_token"
    github_api_url: str = "https://api.github.com"

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if self.env == "production" and self.enable_echo_engine:
            raise ValueError("STUDIOLO_ENABLE_ECHO_ENGINE must not be set in production")
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError("STUDIOLO_HEARTBEAT_SECONDS must be shorter than STUDIOLO_LEASE_SECONDS")
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("STUDIOLO_STORAGE=s3 needs STUDIOLO_S3_BUCKET")
        if bool(self.s3_access_key_id) != bool(self.s3_secret_access_key):
            raise ValueError("set both STUDIOLO_S3_ACCESS_KEY_ID and STUDIOLO_S3_SECRET_ACCESS_KEY, or neither")
        if self.billing == "stripe" and not (self.stripe_secret_key and self.stripe_webhook_secret):
            raise ValueError(
                "STUDIOLO_BILLING=stripe needs STUDIOLO_STRIPE_SECRET_KEY and STUDIOLO_STRIPE_WEBHOOK_SECRET"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'studiolo.db'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or self.redis_url or "redis://localhost:6379/0"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def accel_cache_dir(self) -> Path:
        return self.data_dir / "cache" / "accel"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"
