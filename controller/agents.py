"""Reading agents' /status over HTTP(S) for `drift --from-agents` (the merge is report/fleet.py).

Each URL is an agent's base URL (`http://127.0.0.1:8080`, `https://kvm2.lab:8443`); its
/status is read with the bearer token of `--token-file` when given, verifying HTTPS against
`--agent-ca` (else the system's CAs). Agents are read concurrently, each within `timeout`:
one that does not answer is reported, never waited for beyond that.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def read_status(url: str, token: str | None, context: ssl.SSLContext | None, timeout: float) -> dict[str, Any] | str:
    """The agent's /status document, or why it could not be read."""
    request = urllib.request.Request(url.rstrip("/") + "/status", headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
            doc = json.loads(resp.read(64 * 1024 * 1024))
    except urllib.error.HTTPError as exc:
        return f"cannot read its /status: HTTP {exc.code} {exc.reason}" + (
            " (a --token-file is needed, or it is not this agent's)" if exc.code == 401 else "")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"cannot read its /status: {reason}"
    except ValueError:
        return "its /status is not JSON"
    return doc if isinstance(doc, dict) else "its /status is not a JSON object"


def read_statuses(urls: Sequence[str], token: str | None = None, ca_file: str | None = None,
                  timeout: float = 10.0) -> list[tuple[str, dict[str, Any] | str]]:
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(urls)))) as pool:
        docs = list(pool.map(lambda u: read_status(u, token, context, timeout), urls))
    return list(zip(urls, docs, strict=True))
