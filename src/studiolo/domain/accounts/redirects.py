"""Where a browser may be sent after signing in: the one rule for a ``next`` parameter.

Every place that sends a browser on to ``next`` uses it: the sign-in form without JavaScript (POST /signin),
the sign-in and sign-up pages (which render it into their forms and OAuth links), and the OAuth callback. The
pages' scripts apply the same rule before they follow ``next`` after a sign-in, a sign-up, the first-run setup
or a resumed session (``sameOriginPath`` in web/static/js/app.js), and also resolve it against their own origin.

Browsers drop tab, CR and LF anywhere in a URL and read a backslash as a slash, so ``/<TAB>/evil.example`` or
``/\\evil.example`` become ``//evil.example``: another host. Anything below 0x21 (controls and space), DEL and
backslashes are refused outright, not cleaned, so what is checked is what the browser follows
(tests/e2e/test_web_hardening.py drives Chromium through each variant).
"""

from __future__ import annotations


def safe_next(path: str | None, fallback: str = "/") -> str:
    """``path`` if it is a path on this site, else ``fallback``."""
    if not path or not path.startswith("/") or path.startswith("//"):
        return fallback
    if "\\" in path or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in path):
        return fallback
    return path
