"""HTTP: authenticate, parse, ask ``matching`` for plans, hand them to the journal, answer.

Errors become HTTP responses in one place, ``register``'s handlers.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Blueprint, Flask, Response, abort, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.exceptions import HTTPException

from webhook_server.app import services
from webhook_server.dockerhub import parse_push
from webhook_server.errors import BadRequest, DockerError, Unauthorized, WebhookError
from webhook_server.journal import Deployment, PushRecord
from webhook_server.logs import redact
from webhook_server.matching import Ignored, plan_manual, plan_push
from webhook_server.rollback import plan_rollback
from webhook_server.rules import DOCKER_TAG, SERVICE_NAME

log = logging.getLogger(__name__)

hooks = Blueprint("hooks", __name__)
api = Blueprint("api", __name__, url_prefix="/api")
health = Blueprint("health", __name__)

NOT_FOUND_BODY = {"error": "not_found", "message": "not found"}
WAIT_MARGIN_SECONDS = 30


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _json_body() -> Any:
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequest("the body must be JSON (Content-Type: application/json)")
    return body


def _summary(dep: Deployment) -> dict[str, Any]:
    return {"id": dep.id, "service": dep.service, "image": dep.image, "tag": dep.tag}


def _public(dep: Deployment, *, transitions: bool = False) -> dict[str, Any]:
    data = dep.model_dump(exclude={"pinned_ref", "not_before", "update_marker"})
    if transitions:
        data["transitions"] = [t.model_dump() for t in services().journal.transitions(dep.id)]
    return data


# ---- Docker Hub ------------------------------------------------------------------------------
@hooks.post("/hooks/dockerhub/<token>")
def dockerhub(token: str) -> tuple[Response, int]:
    ctx = services()
    expected = ctx.settings.webhook_token
    if expected is None or not _same(token, expected.get_secret_value()):
        abort(404)  # exactly what any unknown URL gets: a wrong token reveals nothing
    push = parse_push(_json_body())
    record = PushRecord(
        trigger="dockerhub",
        repository=push.repo,
        tag=push.push_data.tag,
        pusher=push.push_data.pusher,
        client=request.remote_addr,
        callback_url=push.callback_url,
    )
    decision = plan_push(repository=push.repo, tag=push.push_data.tag, rules=ctx.rules.current())
    if isinstance(decision, Ignored):
        ctx.journal.record_ignored(record, decision.reason)
        log.info(
            "push %s:%s from %s ignored: %s",
            push.repo,
            push.push_data.tag,
            request.remote_addr,
            decision.reason,
        )
        return jsonify(status="ignored", reason=decision.reason), 200
    deployments = ctx.journal.accept(record, decision)
    ctx.executor.wake()
    log.info(
        "push %s:%s from %s accepted: deployments %s",
        push.repo,
        push.push_data.tag,
        request.remote_addr,
        ", ".join(f"{d.id} ({d.service})" for d in deployments),
    )
    return jsonify(status="accepted", deployments=[_summary(d) for d in deployments]), 202


# ---- API (bearer token) ----------------------------------------------------------------------
@api.before_request
def _authenticate() -> None:
    expected = services().settings.api_token
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if expected is None or scheme.lower() != "bearer" or not _same(given.strip(), expected.get_secret_value()):
        raise Unauthorized("a valid 'Authorization: Bearer <api token>' header is required")


class ManualDeploy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str = Field(pattern=SERVICE_NAME.pattern)
    tag: str = Field(pattern=DOCKER_TAG.pattern)


def _parse(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        raise BadRequest(f"{field}: {err['msg']}") from None


def _wait_flag() -> bool:
    return request.args.get("wait", "").lower() in ("1", "true", "yes")


def _accepted(dep: Deployment, **extra: Any) -> tuple[Response, int]:
    """202 with the new deployment, or with ?wait=true the deployment once it has finished."""
    ctx = services()
    ctx.executor.wake()
    if not _wait_flag():
        return jsonify(status="accepted", **extra, deployments=[_summary(dep)]), 202
    rule = ctx.rules.current().get(dep.service)
    timeout = (rule.timeout.total_seconds() if rule else 0) + WAIT_MARGIN_SECONDS
    return jsonify(_public(ctx.journal.wait_done(dep.id, timeout=timeout), transitions=True)), 200


@api.post("/deployments")
def create_deployment() -> tuple[Response, int]:
    ctx = services()
    wanted = _parse(ManualDeploy, _json_body())
    rules = ctx.rules.current()
    plan = plan_manual(service=wanted.service, tag=wanted.tag, rules=rules)
    record = PushRecord(trigger="manual", repository=plan.repository, tag=plan.tag, client=request.remote_addr)
    [dep] = ctx.journal.accept(record, [plan])
    log.info(
        "manual deployment %s of %s:%s to %s requested from %s",
        dep.id,
        plan.image,
        plan.tag,
        plan.service,
        request.remote_addr,
    )
    return _accepted(dep)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    to: int | None = Field(default=None, gt=0)


@api.post("/services/<service>/rollback")
def rollback_service(service: str) -> tuple[Response, int]:
    ctx = services()
    body = request.get_json(silent=True) if request.data else {}
    wanted = _parse(RollbackRequest, body if body is not None else {})
    running = ctx.swarm.inspect(service)
    plan, target = plan_rollback(
        journal=ctx.journal, rules=ctx.rules.current(), service=service, running_image=running.image, to=wanted.to
    )
    record = PushRecord(trigger="rollback", repository=plan.repository, tag=plan.tag, client=request.remote_addr)
    [dep] = ctx.journal.accept(record, [plan], pinned_ref=target.image_ref)
    log.info(
        "rollback %s of %s to deployment %s (%s) requested from %s",
        dep.id,
        service,
        target.id,
        target.image_ref,
        request.remote_addr,
    )
    return _accepted(dep, rollback_to=target.id)


@api.get("/deployments")
def list_deployments() -> Response:
    try:
        limit = int(request.args.get("limit", "50"))
    except ValueError:
        raise BadRequest("limit: must be a whole number") from None
    if not 1 <= limit <= 1000:
        raise BadRequest("limit: must be between 1 and 1000")
    found = services().journal.find(service=request.args.get("service") or None, limit=limit)
    return jsonify(deployments=[_public(d) for d in found])


@api.get("/deployments/<int:deployment_id>")
def get_deployment(deployment_id: int) -> Response:
    return jsonify(_public(services().journal.get(deployment_id), transitions=True))


# ---- health ----------------------------------------------------------------------------------
@health.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@health.get("/readyz")
def readyz() -> tuple[Response, int]:
    ctx = services()
    problems = []
    ctx.rules.current()
    if ctx.rules.error:
        problems.append(f"rules: {ctx.rules.error}")
    try:
        ctx.swarm.ping()
    except DockerError as e:
        problems.append(f"docker: {e.message}")
    if problems:
        return jsonify(status="unavailable", reasons=problems), 503
    return jsonify(status="ready"), 200


# ---- wiring and errors -----------------------------------------------------------------------
def register(app: Flask) -> None:
    app.register_blueprint(hooks)
    app.register_blueprint(api)
    app.register_blueprint(health)

    @app.errorhandler(WebhookError)
    def _project_error(e: WebhookError) -> tuple[Response, int]:
        if e.http_status >= 500:
            log.warning("%s %s failed: %s", request.method, redact(request.path), e.message)
        response = jsonify(error=e.code, message=e.message)
        if isinstance(e, Unauthorized):
            response.headers["WWW-Authenticate"] = "Bearer"
        return response, e.http_status

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> tuple[Response, int]:
        status = e.code or 500
        if status == 404:
            return jsonify(NOT_FOUND_BODY), 404
        name = (e.name or "error").lower().replace(" ", "_")
        return jsonify(error=name, message=e.description), status

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> tuple[Response, int]:
        log.exception("%s %s: unexpected error", request.method, redact(request.path))
        return jsonify(error="internal_error", message="internal error; see the server log"), 500

    @app.after_request
    def _access_log(response: Response) -> Response:
        log.info('%s "%s %s" %s', request.remote_addr, request.method, redact(request.path), response.status_code)
        return response
