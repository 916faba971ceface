"""ModelPress settings, read from environment variables with safe local defaults.

Embedded default (no services): SQLite under var/, files under var/media/, Celery over
kombu's filesystem transport under var/broker/. DATABASE_URL and CELERY_BROKER_URL switch
to PostgreSQL and Redis. MODELPRESS_PRODUCTION=true turns on the hardened settings and
requires SECRET_KEY.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parents[2]
VAR_DIR = Path(env_str("MODELPRESS_VAR_DIR") or BASE_DIR / "var")

PRODUCTION = env_bool("MODELPRESS_PRODUCTION", False)
DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) must be set in production.")
    # Local use: generate once and keep it under var/ so sessions survive restarts.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.humanize",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    # django-ninja: the API docs page and its assets from our own static files, not a CDN.
    "ninja",
    "accounts",
    "registry",
    "jobs",
    "web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'modelpress.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the worker write concurrently: WAL plus a busy timeout avoids
    # "database is locked" under the embedded default.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts-login"
LOGIN_REDIRECT_URL = "web-dashboard"
LOGOUT_REDIRECT_URL = "accounts-login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on a missing root
STATICFILES_DIRS = [
    ("vendor/pico", BASE_DIR / "node_modules" / "@picocss" / "pico" / "css"),
    ("vendor/chartjs", BASE_DIR / "node_modules" / "chart.js" / "dist"),
    BASE_DIR / "platform" / "web" / "assets",
]
# Uploads, model versions and artifacts: the local filesystem under MEDIA_ROOT by default.
# MODELPRESS_S3_BUCKET switches to an S3-compatible object store (AWS S3, MinIO, Ceph RGW, ...)
# through django-storages; web and workers then share no disk (workers copy inputs to their
# scratch directory and upload artifacts back, web.storage). See
# default_storage_from_env below for the MODELPRESS_S3_* variables.

# On S3, artifact downloads redirect to a presigned URL that is valid this long: the client
# follows the redirect at once, and a transfer under way is not cut off when it expires.
MODELPRESS_S3_PRESIGNED_SECONDS = env_int("MODELPRESS_S3_PRESIGNED_SECONDS", 60)
# false: stream S3 downloads through the web app instead, for an endpoint that the users'
# browsers cannot reach (a MinIO on an internal network).
MODELPRESS_S3_REDIRECT_DOWNLOADS = env_bool("MODELPRESS_S3_REDIRECT_DOWNLOADS", True)
# Life of a signed download link (jobs.download_links): a URL that fetches one artifact
# without a session, for a device or curl.
MODELPRESS_DOWNLOAD_LINK_SECONDS = env_int("MODELPRESS_DOWNLOAD_LINK_SECONDS", 600)
if not 0 < MODELPRESS_S3_PRESIGNED_SECONDS <= 7 * 24 * 3600:  # SigV4's own limit
    raise ImproperlyConfigured("MODELPRESS_S3_PRESIGNED_SECONDS must be between 1 and 604800")
if MODELPRESS_DOWNLOAD_LINK_SECONDS <= 0:
    raise ImproperlyConfigured("MODELPRESS_DOWNLOAD_LINK_SECONDS must be positive")


def default_storage_from_env() -> dict[str, object]:
    """STORAGES["default"] from the environment (a function: the storage tests build their S3
    configuration with it, from the same variables)."""
    bucket = env_str("MODELPRESS_S3_BUCKET") or ""
    if not bucket:
        return {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(Path(env_str("MEDIA_ROOT") or VAR_DIR / "media"))},
        }
    endpoint = env_str("MODELPRESS_S3_ENDPOINT_URL") or None
    # Path style (https://host/bucket/key) by default with an endpoint of one's own: MinIO and
    # other self-hosted services rarely have a DNS name per bucket. AWS picks for itself.
    addressing = env_str("MODELPRESS_S3_ADDRESSING_STYLE") or ("path" if endpoint else "auto")
    if addressing not in {"path", "virtual", "auto"}:
        raise ImproperlyConfigured(
            f"MODELPRESS_S3_ADDRESSING_STYLE must be path, virtual or auto, got {addressing!r}"
        )
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint,
            "region_name": env_str("MODELPRESS_S3_REGION") or None,
            # Unset: boto3's own credential chain (AWS_* variables, an instance or pod role).
            "access_key": env_str("MODELPRESS_S3_ACCESS_KEY_ID") or None,
            "secret_key": env_str("MODELPRESS_S3_SECRET_ACCESS_KEY") or None,
            "addressing_style": addressing,
            "signature_version": "s3v4",
            "location": (env_str("MODELPRESS_S3_PREFIX") or "").strip("/"),
            # A name in use gets a random suffix, as on the filesystem: never an overwrite.
            "file_overwrite": False,
            "default_acl": None,  # objects stay private; clients read through presigned URLs
            "querystring_auth": True,
            "querystring_expire": MODELPRESS_S3_PRESIGNED_SECONDS,
            # A stored file opened for reading is buffered in memory up to this size, then on
            # disk (FILE_UPLOAD_TEMP_DIR); django-storages' default (0) never spills to disk.
            "max_memory_size": 16 * 1024**2,
        },
    }


STORAGES = {
    "default": default_storage_from_env(),
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the finders so `make run` and tests need no collectstatic step.
WHITENOISE_USE_FINDERS = True

# Uploads stream to a temporary file in chunks, never whole into memory; the handler
# also enforces the size limit while the bytes arrive.
FILE_UPLOAD_HANDLERS = ["registry.upload_handlers.BoundedTemporaryFileUploadHandler"]
FILE_UPLOAD_TEMP_DIR = env_str("FILE_UPLOAD_TEMP_DIR")
# Room for models past protobuf's 2 GB (uploaded as .onnx.zip with external data).
MODELPRESS_MAX_UPLOAD_BYTES = env_int("MODELPRESS_MAX_UPLOAD_BYTES", 8 * 1024**3)
# A model conversion at ingest (TorchScript, torch.export, Keras, SavedModel) that runs
# longer is stopped and the version marked failed.
MODELPRESS_INGEST_TIMEOUT_SECONDS = env_int("MODELPRESS_INGEST_TIMEOUT_SECONDS", 1800)

# Celery: Redis in production, kombu's filesystem transport when no broker is configured.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE") or "cpu"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
# A job's wall-clock limit, in seconds. The runner enforces the soft limit itself on the
# job's engine process (under any pool, and when run_job is called directly); Celery's soft
# limit is the same number, and its hard limit a backstop for a worker stuck elsewhere.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("MODELPRESS_JOB_SOFT_TIME_LIMIT", 6 * 3600)
CELERY_TASK_TIME_LIMIT = env_int("MODELPRESS_JOB_TIME_LIMIT", 6 * 3600 + 300)
# The resident memory a job's engine process tree may use (MiB) before it is stopped and the
# job failed. 0: 75% of the worker machine's memory, or of its container's limit when lower,
# which leaves room for the worker itself and the OS. With several jobs at once on a machine
# (celery --concurrency N), set about that share divided by N.
MODELPRESS_JOB_MEMORY_LIMIT_MB = env_int("MODELPRESS_JOB_MEMORY_LIMIT_MB", 0)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Job queues (jobs.routing): recipes that train go to the gpu queue while a live worker with
# a CUDA device consumes it; everything else, and training without such a worker, to cpu.
MODELPRESS_CPU_QUEUE = env_str("MODELPRESS_CPU_QUEUE") or CELERY_TASK_DEFAULT_QUEUE
MODELPRESS_GPU_QUEUE = env_str("MODELPRESS_GPU_QUEUE") or "gpu"
# Model conversions at upload (seconds to minutes, needed before any job can start) have a
# queue of their own, served by a worker of their own (`make run` starts one beside the job
# worker; compose and k8s run a worker-convert), so they never wait behind hour-long jobs.
MODELPRESS_CONVERT_QUEUE = env_str("MODELPRESS_CONVERT_QUEUE") or "convert"

# A worker is "alive" when its heartbeat row is younger than this; a running job whose
# heartbeat is older than MODELPRESS_JOB_STALE_SECONDS is failed by the reaper.
MODELPRESS_WORKER_HEARTBEAT_SECONDS = env_int("MODELPRESS_WORKER_HEARTBEAT_SECONDS", 10)
MODELPRESS_WORKER_STALE_SECONDS = env_int("MODELPRESS_WORKER_STALE_SECONDS", 60)
MODELPRESS_JOB_STALE_SECONDS = env_int("MODELPRESS_JOB_STALE_SECONDS", 300)
MODELPRESS_SCRATCH_DIR = env_str("MODELPRESS_SCRATCH_DIR")

EMAIL_BACKEND = env_str("EMAIL_BACKEND") or "django.core.mail.backends.console.EmailBackend"
# SMTP, used when EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend (password
# resets, team invites).
EMAIL_HOST = env_str("EMAIL_HOST") or "localhost"
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
# Seconds; a hung SMTP server must not hold a web worker (invites send inside the request).
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL") or "ModelPress <modelpress@localhost>"

# Teams: invite links expire; quotas apply to teams whose own fields are empty (site admins
# set per-team values in Django admin).
MODELPRESS_INVITE_TTL_HOURS = env_int("MODELPRESS_INVITE_TTL_HOURS", 72)
MODELPRESS_TEAM_STORAGE_QUOTA_BYTES = env_int("MODELPRESS_TEAM_STORAGE_QUOTA_BYTES", 20 * 1024**3)
MODELPRESS_TEAM_MAX_CONCURRENT_JOBS = env_int("MODELPRESS_TEAM_MAX_CONCURRENT_JOBS", 4)

# Login rate limits (accounts.ratelimit): after this many failed logins for one username from
# one client address, or from one address for any username, within the window, those logins
# are refused until it ends. A username alone is never locked (anyone could lock its owner
# out): after MAX_FAILURES failures from all addresses, an address that failed on it waits
# MODELPRESS_LOGIN_SLOWDOWN_SECONDS before its next try.
MODELPRESS_LOGIN_MAX_FAILURES = env_int("MODELPRESS_LOGIN_MAX_FAILURES", 10)
MODELPRESS_LOGIN_SLOWDOWN_SECONDS = env_int("MODELPRESS_LOGIN_SLOWDOWN_SECONDS", 5)
# Higher: an office behind one NAT address shares it.
MODELPRESS_LOGIN_MAX_FAILURES_PER_IP = env_int("MODELPRESS_LOGIN_MAX_FAILURES_PER_IP", 30)
MODELPRESS_LOGIN_WINDOW_SECONDS = env_int("MODELPRESS_LOGIN_WINDOW_SECONDS", 15 * 60)
# Reverse proxies in front of the app that append the client's address to X-Forwarded-For.
# Production runs behind one (its TLS proxy or ingress; see SECURE_PROXY_SSL_HEADER); 0 uses
# REMOTE_ADDR, since the header is client-controlled. Too low, and every user shares the
# proxy's address and its failure count.
MODELPRESS_TRUSTED_PROXIES = env_int("MODELPRESS_TRUSTED_PROXIES", 1 if PRODUCTION else 0)
# Those counts live in the cache, which every web process must share: Redis (CACHE_URL, by
# default the broker's Redis) where there is one, else this process's memory.
_CACHE_URL = env_str("CACHE_URL") or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else ""
)
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends."
        + ("redis.RedisCache" if _CACHE_URL else "locmem.LocMemCache"),
        "LOCATION": _CACHE_URL,
        "KEY_PREFIX": "modelpress",
    }
}

# /metrics answers only requests with `Authorization: Bearer <this token>`; empty: 404.
MODELPRESS_METRICS_TOKEN = env_str("MODELPRESS_METRICS_TOKEN") or ""

# text: one readable line per record; json: one JSON object per line (for log collectors),
# with `job_id` on every record emitted while a worker runs a job (null otherwise).
MODELPRESS_LOG_FORMAT = (env_str("MODELPRESS_LOG_FORMAT") or "text").strip().lower()
if MODELPRESS_LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(
        f"MODELPRESS_LOG_FORMAT must be text or json, got {MODELPRESS_LOG_FORMAT!r}"
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"job_id": {"()": "config.log_context.JobIdFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s %(job_id)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",  # ISO 8601 in UTC
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": MODELPRESS_LOG_FORMAT,
            "filters": ["job_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL") or "INFO"},
    "loggers": {"django.server": {"level": "WARNING"}},
}

if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # Preload-list submission is hard to undo, so it is the operator's explicit choice.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # /healthz is probed over plain HTTP by load balancers and orchestrators, and /metrics
    # scraped (with its token) from inside the cluster.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
