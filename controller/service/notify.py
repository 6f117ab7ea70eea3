"""Notifications: a JSON POST (Slack-compatible `text` included) to --notify URL."""

from __future__ import annotations

import json
import queue
import threading
import urllib.request
from typing import Any

from controller.logging import get_logger

log = get_logger("virtsync.notify")


class Notifier:
    def __init__(self, url: str | None, timeout: float = 5.0):
        self.url = url
        self.timeout = timeout
        self._q: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1000)
        if url:
            threading.Thread(target=self._run, name="notify", daemon=True).start()

    def send(self, event: str, text: str, **fields: Any) -> None:
        if not self.url:
            return
        try:
            self._q.put_nowait({"event": event, "text": f"virtsync: {text}", **fields})
        except queue.Full:
            log.warning("notification dropped", notification=event)

    def _run(self) -> None:
        while True:
            msg = self._q.get()
            body = json.dumps(msg).encode()
            req = urllib.request.Request(self.url or "", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    resp.read()
            except OSError as exc:
                log.warning("notification failed", notification=msg["event"], error=str(exc))
