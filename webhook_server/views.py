"""HTTP: authenticate, parse, ask ``matching`` for plans, hand them to the journal, answer.

Errors become HTTP responses in one place, ``register``'s handlers.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import re
import uuid
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, Flask, Response, abort, current_app, g, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import PathConverter

from webhook_server import certs, logs, metrics, problems
from webhook_server.context import TRUSTED_PROXY_KEY, services
from webhook_server.dockerhub import HubPush, parse_push
from webhook_server.errors import (
    BadRequest,
    DockerError,
    JournalUnavailable,
    TooManyRequests,
    Unauthorized,
    WebhookError,
)
from webhook_server.journal import Deployment, PushRecord
from webhook_server.logs import printable, redact
from webhook_server.matching import Ignored, plan_push
from webhook_server.operations import request_deploy, request_rollback, wait_seconds
from webhook_server.proxy import reload as reloading
from webhook_server.rules import DOCKER_TAG, SERVICE_NAME, RuleSet
from webhook_server.status import cluster_status, deployment_detail, executor_detail, node_detail, overview

log = logging.getLogger(__name__)

hooks = Blueprint("hooks", __name__)
api = Blueprint("api", __name__, url_prefix="/api")
health = Blueprint("health", __name__)

NOT_FOUND_BODY = {"error": "not_found", "message": "not found"}
WAIT_MARGIN_SECONDS = 30
# SQLite's integers are 64-bit: a larger id cannot name a deployment.
MAX_ID = 2**63 - 1
# What a proxy's request id may be (nginx's $request_id is 32 hex digits); anything else is replaced.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RulesUnavailable(WebhookError):
    """No rules are loaded (the file was broken when this worker started): nothing can be planned."""

    http_status = 503
    code = "rules_unavailable"


def _rules() -> RuleSet:
    """The rules in force; refuse rather than answer "no rule wants this" when there are none."""
    source = services().rules
    rules = source.current()
    if not source.loaded:
        raise RulesUnavailable(f"no rules are loaded: {source.error}")
    return rules


def _reject(reason: str) -> None:
    """Why this request is refused, for its one access-log line (never the token)."""
    g.rejected = reason


def _matches(given: str, accepted: list[str]) -> bool:
    # Compared with every accepted token, in constant time each, so timing tells nothing about which.
    found = False
    for token in accepted:
        found |= hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode("utf-8"))
    return found


def _client_key() -> str:
    return request.remote_addr or "unknown"


def _not_locked_out() -> None:
    """Too many wrong tokens from this client lately: refuse before comparing, so guessing stops."""
    verdict = services().limiter.check(_client_key(), "auth")
    if not verdict.allowed:
        raise TooManyRequests("too many failed token attempts; try again later", retry_after=verdict.retry_after)


def _failed_token() -> None:
    services().limiter.hit(_client_key(), "auth")


def _raw_body() -> bytes:
    """The request body, at most MAX_CONTENT_LENGTH bytes however it was framed; a body the server cannot
    read (a broken chunked framing, a client that went away) is the client's error, not ours."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    try:
        if request.content_length is None:
            # Chunked: no length to refuse up front, and werkzeug's stream would cut the body at the limit
            # without a word; read the server's own input, one byte past the limit, to tell.
            data: bytes = request.environ["wsgi.input"].read(limit + 1)
            if len(data) > limit:
                raise RequestEntityTooLarge()
            return data
        return request.get_data(cache=True)
    except HTTPException:
        raise
    except Exception as e:
        raise BadRequest(f"the request body could not be read ({e.__class__.__name__})") from None


def _json_body(data: bytes | None = None) -> Any:
    """The body as JSON; ``data`` when the caller has read it already (a chunked body can be read once)."""
    if data is None:
        data = _raw_body()
    try:
        return json.loads(data)
    except RecursionError:
        raise BadRequest("the body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body must be JSON (Content-Type: application/json)") from None


def _summary(dep: Deployment) -> dict[str, Any]:
    return {"id": dep.id, "service": dep.service, "image": dep.image, "tag": dep.tag}


def _public(dep: Deployment, *, transitions: bool = False) -> dict[str, Any]:
    return deployment_detail(services().journal, dep, transitions=transitions)


# ---- Docker Hub ------------------------------------------------------------------------------
class TokenConverter(PathConverter):
    """The rest of the path, whatever it holds: base64 tokens (``openssl rand -base64 32``) contain "/", which
    the default converter never matches, and may start with one, which ``path`` refuses."""

    regex = ".+"
    # werkzeug infers this from a "/" in the regex; ".+" has none, yet it spans segments.
    part_isolating = False


# merge_slashes: werkzeug would otherwise turn a "//" inside a token into a redirect.
@hooks.post("/hooks/dockerhub/<token:token>", merge_slashes=False)
def dockerhub(token: str) -> tuple[Response, int]:
    ctx = services()
    _not_locked_out()
    if not _matches(token, ctx.settings.webhook_tokens()):
        _failed_token()
        _reject("wrong webhook token")
        abort(404)  # exactly what any unknown URL gets: a wrong token reveals nothing
    push = parse_push(_json_body())
    record = PushRecord(
        trigger="dockerhub",
        repository=push.repo,
        tag=push.push_data.tag,
        pusher=push.push_data.pusher,
        client=request.remote_addr,
        callback_url=push.callback_url,
        request_id=g.request_id,
    )
    decision = plan_push(repository=push.repo, tag=push.push_data.tag, rules=_rules())
    if isinstance(decision, Ignored):
        ctx.journal.record_ignored(record, decision.reason)
        _outcome(f"push {_pushed(push)} ignored: {printable(decision.reason)}")
        return jsonify(status="ignored", reason=decision.reason), 200
    deployments = ctx.journal.accept(record, decision)
    ctx.executor.wake()
    listed = ", ".join(f"{d.id} ({d.service})" for d in deployments)
    _outcome(f"push {_pushed(push)} accepted: deployments {listed}")
    return jsonify(status="accepted", deployments=[_summary(d) for d in deployments]), 202


def _pushed(push: HubPush) -> str:
    return f"{printable(push.repo)}:{printable(push.push_data.tag)} from {printable(request.remote_addr or '?')}"


def _outcome(text: str) -> None:
    """What the request came to: it becomes the request's one log line (a line of its own beside the access
    line cost a second log record per push, a tenth of an ignored push's time)."""
    g.outcome = text


# ---- API (bearer token) ----------------------------------------------------------------------
@api.before_request
def _authenticate() -> None:
    _require_api_token()


def _require_api_token() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    _not_locked_out()
    if scheme.lower() != "bearer" or not _matches(given.strip(), services().settings.api_tokens()):
        _failed_token()
        _reject("missing or wrong API token")
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
        raise BadRequest(problems.first_problem(e)) from None


def _client() -> str | None:
    return printable(request.remote_addr) if request.remote_addr else None


def _wait_flag() -> bool:
    return request.args.get("wait", "").lower() in ("1", "true", "yes")


def _accepted(dep: Deployment, **extra: Any) -> tuple[Response, int]:
    """202 with the new deployment, or with ?wait=true the deployment once it has finished."""
    ctx = services()
    ctx.executor.wake()
    if not _wait_flag():
        return jsonify(status="accepted", **extra, deployments=[_summary(dep)]), 202
    timeout = wait_seconds(ctx.rules.current(), dep.service, margin=WAIT_MARGIN_SECONDS)
    return jsonify(_public(ctx.journal.wait_done(dep.id, timeout=timeout), transitions=True)), 200


@api.post("/deployments")
def create_deployment() -> tuple[Response, int]:
    wanted = _parse(ManualDeploy, _json_body())
    dep = request_deploy(
        journal=services().journal,
        rules=_rules(),
        service=wanted.service,
        tag=wanted.tag,
        client=_client(),
        request_id=g.request_id,
    )
    return _accepted(dep)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    to: StrictInt | None = Field(default=None, gt=0, le=MAX_ID)


@api.post("/services/<service>/rollback")
def rollback_service(service: str) -> tuple[Response, int]:
    ctx = services()
    # No body means the default target; a body that is not a JSON object is refused, never read as {}.
    data = _raw_body()
    body = _json_body(data) if data else {}
    wanted = _parse(RollbackRequest, body)
    done = request_rollback(
        journal=ctx.journal,
        swarm=ctx.swarm,
        rules=_rules(),
        service=service,
        to=wanted.to,
        client=_client(),
        request_id=g.request_id,
    )
    return _accepted(done.deployment, rollback_to=done.target.id)


@api.get("/services")
def list_services() -> Response:
    """Every service in the rules: what it runs, its last deployment, what waits, what is rolling out."""
    ctx = services()
    found = cluster_status(journal=ctx.journal, swarm=ctx.swarm, rules=_rules())
    return jsonify(overview(ctx.swarm.node(), executor_detail(ctx.journal), found))


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


@api.get(f"/deployments/<int(max={MAX_ID}):deployment_id>")
def get_deployment(deployment_id: int) -> Response:
    return jsonify(_public(services().journal.get(deployment_id), transitions=True))


# ---- the proxy ---------------------------------------------------------------------------------
@api.post("/proxy/reload")
def reload_proxy() -> Response:
    """What ``reload-proxy`` does, from inside the server (which holds the Docker socket): for a certbot that
    runs elsewhere with nothing but curl. A failed ``nginx -t`` reloads nothing and answers 422."""
    ctx = services()
    s = ctx.settings
    if ctx.proxy_swarm is None:
        raise reloading.ReloadError("this server cannot reach nginx (no Docker proxy adapter)")
    config = _rules().proxy if s.proxy_mode == "secrets" else None
    cert_dir = s.cert_dir or (Path(config.paths.certificates) if config is not None else None)
    job = reloading.NodeJob(image=s.proxy_job_image, socket=s.proxy_node_socket) if s.proxy_job_image else None
    with ctx.proxy_swarm() as swarm:
        report = reloading.reload_proxy(
            swarm, s.proxy_service, mode=s.proxy_mode, config=config, cert_dir=cert_dir, job=job
        )
    log.info("proxy reloaded on request from %s: %s", _client() or "?", report.summary(s.proxy_service))
    return jsonify(report.as_json(s.proxy_service, mode=s.proxy_mode))


@api.get("/certificates")
def list_certificates() -> Response:
    """The lineages nginx.conf names: expiry, serial on disk and, when probed, the serial nginx serves."""
    ctx = services()
    found = ctx.certificates.current() if ctx.certificates is not None else []
    warn_days = ctx.certificates.warn_days if ctx.certificates is not None else ctx.settings.cert_warn_days
    return jsonify(certs.state_json(found, warn_days=warn_days))


# ---- health ----------------------------------------------------------------------------------
@functools.cache
def openapi_document() -> dict[str, Any]:
    """The HTTP API's contract (``openapi.yaml`` beside this module); a test holds the routes to it."""
    text = (Path(__file__).parent / "openapi.yaml").read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    return document


@health.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())


@health.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@health.get("/readyz")
def readyz() -> tuple[Response, int]:
    """503 with reasons when pushes would be accepted but could not be rolled out; warnings otherwise."""
    ctx = services()
    reasons: list[str] = []
    warnings: list[str] = []
    rules = ctx.rules.current()
    if not ctx.rules.loaded:
        reasons.append(f"rules: no rules are loaded: {ctx.rules.error}")
    elif ctx.rules.error:
        reasons.append(f"rules: {ctx.rules.error}")
    try:
        ctx.journal.ping()
    except JournalUnavailable as e:
        # A receiver that cannot record pushes must get none: they would be answered 503.
        reasons.append(f"journal: {e.message}")
    node = ctx.swarm.node()  # never raises: an unreachable Docker is one of its problems
    reasons.extend(f"docker: {problem}" for problem in node.problems)
    if not node.problems and not (node.is_manager and node.swarm_state == "active"):
        state = node.swarm_state or "unknown"
        reasons.append(f"docker: {node.docker_host} is not a swarm manager (swarm state: {state})")
    if not node.problems:
        try:
            missing = sorted(set(rules.rules) - ctx.service_names.get())
        except DockerError as e:
            reasons.append(f"docker: {e.message}")
        else:
            warnings.extend(f"rule {name!r}: no such service in the swarm" for name in missing)
    warnings.extend(_certificate_warnings())
    body = {"node": node_detail(node), "warnings": warnings}
    if reasons:
        return jsonify(status="unavailable", reasons=reasons, **body), 503
    return jsonify(status="ready", **body), 200


def _certificate_warnings() -> list[str]:
    """Certificates close to their end, expired, unreadable or not served: degraded, never a 503."""
    certificates = services().certificates
    if certificates is None:
        return []
    try:
        return certs.warnings(certificates.current())
    except Exception:
        log.exception("readyz: cannot read the certificates")
        return ["certificates: cannot be read; see the server log"]


@health.get("/metrics")
def prometheus_metrics() -> Response:
    ctx = services()
    if ctx.settings.metrics_token_required:
        _require_api_token()
    body, content_type = metrics.render(ctx.journal, certificates=_expiries if ctx.certificates else None)
    return Response(body, content_type=content_type)


# ---- wiring and errors -----------------------------------------------------------------------
def register(app: Flask) -> None:
    app.url_map.converters["token"] = TokenConverter
    app.register_blueprint(hooks)
    app.register_blueprint(api)
    app.register_blueprint(health)

    @app.errorhandler(WebhookError)
    def _project_error(e: WebhookError) -> tuple[Response, int]:
        if e.http_status >= 500:
            log.warning("%s %s failed: %s", request.method, _path(), printable(e.message))
        elif "rejected" not in g:
            _reject(e.message)
        response = jsonify(error=e.code, message=e.public_message)
        if isinstance(e, Unauthorized):
            response.headers["WWW-Authenticate"] = "Bearer"
        if isinstance(e, TooManyRequests):
            response.headers["Retry-After"] = str(e.retry_after)
        return response, e.http_status

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> tuple[Response, int]:
        status = e.code or 500
        if status == 404:
            return jsonify(NOT_FOUND_BODY), 404
        if status < 500 and "rejected" not in g:
            _reject(e.description or str(status))
        name = (e.name or "error").lower().replace(" ", "_")
        return jsonify(error=name, message=e.description), status

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> tuple[Response, int]:
        log.exception("%s %s: unexpected error", request.method, _path())
        return jsonify(error="internal_error", message="internal error; see the server log"), 500

    @app.before_request
    def _request_context() -> None:
        g.request_id = _request_id()
        g.log_context = logs.context(request_id=g.request_id)
        g.log_context.__enter__()

    @app.before_request
    def _rate_limit() -> None:
        if request.blueprint == health.name:
            return  # probes and scrapes come from the platform, often and on purpose
        verdict = services().limiter.hit(_client_key(), "request")
        if not verdict.allowed:
            raise TooManyRequests("too many requests from this address", retry_after=verdict.retry_after)

    @app.teardown_request
    def _end_request_context(_error: BaseException | None) -> None:
        if "log_context" in g:
            g.log_context.__exit__(None, None, None)

    @app.after_request
    def _access_log(response: Response) -> Response:
        if "request_id" in g:
            response.headers["X-Request-ID"] = g.request_id
        if request.blueprint == hooks.name:
            metrics.webhook_received(_hook_result(response.status_code))
        # One line per request; a refused one says why, at WARNING so that operators see probes and typos.
        asked = f'"{printable(request.method)} {_path()}" {response.status_code}'
        line = f"{printable(request.remote_addr or '?')} {asked}"
        rejected = g.get("rejected")
        if rejected is not None:
            log.warning("%s rejected: %s", line, printable(rejected))
        elif "outcome" in g:
            log.info("%s (%s)", g.outcome, asked)
        else:
            log.info("%s", line)
        return response


def _request_id() -> str:
    """A trusted proxy's X-Request-ID (nginx's $request_id) when it is a sane token, else a new one."""
    given = request.headers.get("X-Request-ID", "")
    if request.environ.get(TRUSTED_PROXY_KEY) and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def _hook_result(status: int) -> metrics.WebhookResult:
    # The hook answers 202 when it queued work and 200 when no rule wanted the push; anything else refused it.
    return "accepted" if status == 202 else "ignored" if status == 200 else "rejected"


def _path() -> str:
    # Escape first: a token cut short by a control character would otherwise be redacted only in part.
    return redact(printable(request.path))


def _expiries() -> list[tuple[str, float]]:
    """(lineage, seconds left) of every readable certificate, read at scrape time."""
    certificates = services().certificates
    if certificates is None:
        return []
    return [(c.lineage, c.expires_in_seconds) for c in certificates.current() if c.expires_in_seconds is not None]
