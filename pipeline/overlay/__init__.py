"""`onair overlay`: the now-playing card served over HTTP (page, JSON, Server-Sent Events)."""
