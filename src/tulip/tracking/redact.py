"""Keep credentials from the environment out of logs: a logging filter and a URI cleaner.

A value is treated as a secret when its environment variable's name marks it as one (TOKEN,
SECRET, PASSWORD, PASSWD, CREDENTIAL, or a name ending in _KEY) and it is at least
``MIN_SECRET_CHARS`` long. Shorter values are left alone because they would match ordinary words. Credentials inside URIs (``scheme://user:pass@host``)
are removed whatever their source.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

MIN_SECRET_CHARS = 6
MASK = "***"
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|_KEY$|^KEY$", re.IGNORECASE)
_URI_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the secret-named environment variables, longest first (so no secret is half-masked)."""
    environ = os.environ if environ is None else environ
    values = {value for name, value in environ.items() if _SECRET_NAME.search(name) and len(value) >= MIN_SECRET_CHARS}
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every secret value and every URI's user-info part replaced by ``***``."""
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, MASK)
    return _URI_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)


_installed = False


def install() -> None:
    """Redact every log record this process creates, whichever logger or handler it goes to.

    A record factory is used rather than a handler filter because libraries (MLflow among them)
    attach handlers of their own that do not propagate to the root logger.
    """
    global _installed
    if _installed:
        return
    secrets = secret_values()
    make_record = logging.getLogRecordFactory()

    def redacting_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is left for logging to report
            return record
        record.msg, record.args = redact(message, secrets), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), secrets)
            record.exc_info = None
        return record

    logging.setLogRecordFactory(redacting_record)
    _installed = True
