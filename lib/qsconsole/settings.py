"""Django settings: everything comes from the console's data directory (config.py), nothing from this file's edits."""

from __future__ import annotations

import os

from qsconsole import config

DATA_DIR = config.data_dir()
CONSOLE = config.load(DATA_DIR)
# migrate creates the key (QS_CONSOLE_CREATE_KEY, set by cli.py for that command only); every other command needs it.
SECRET_KEY = config.secret_key(DATA_DIR, create=os.environ.get("QS_CONSOLE_CREATE_KEY") == "1")
DEBUG = False
ALLOWED_HOSTS = list(CONSOLE.allowed_hosts) + [host for host in os.environ.get("QS_CONSOLE_LISTEN_HOST", "").split(",")
                                                if host]
DATABASES = {"default": config.database_settings(CONSOLE.db, DATA_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "qsconsole.console",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "qsconsole.urls"
# The pages' templates (console/templates/): autoescaping on, as Django's default; mail text is never marked safe.
TEMPLATES: list[dict] = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                       "django.contrib.auth.context_processors.auth"]},
}]
LOGIN_URL = "/login"
LOGIN_REDIRECT_URL = "/"

USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = False

# The session cookie is the login: script can't read it, another site's pages don't send it (Lax), and behind TLS
# (secure_cookies in console.json) it never travels in clear.
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = CONSOLE.secure_cookies
SESSION_COOKIE_NAME = "qsconsole_session"
SESSION_COOKIE_AGE = 12 * 3600
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SECURE = CONSOLE.secure_cookies
CSRF_COOKIE_NAME = "qsconsole_csrftoken"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    # Not a line per refused request (every anonymous probe would be one): the audit log keeps refused logins.
    "loggers": {"django.request": {"level": "ERROR"}},
}

# createuser checks each new password with Django's standard validators (length, common passwords, all digits).
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
