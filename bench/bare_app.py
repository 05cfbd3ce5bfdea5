"""The bare Flask app the accept path is compared with: one route that answers 202 with a little JSON.

Served by ``bench/accept.py`` under the same gunicorn settings as ``webhook-server serve``.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify

app = Flask(__name__)


@app.post("/hooks/dockerhub/<path:token>")
def dockerhub(token: str) -> tuple[Response, int]:
    return jsonify(status="accepted"), 202
