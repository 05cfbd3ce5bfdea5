"""Docker Hub's push payload: what is accepted, what it means, and the 400s that name the field."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from webhook_server.dockerhub import parse_push
from webhook_server.errors import BadRequest

# As documented by Docker Hub (https://docs.docker.com/docker-hub/repos/manage/webhooks/).
DOCUMENTED: dict[str, Any] = {
    "callback_url": "https://registry.hub.docker.com/u/svendowideit/testhook/hook/2141b5bi5i5b02bec211i4eeih0242eg11000a/",
    "push_data": {"pushed_at": 1417566161, "pusher": "trustedbuilder", "tag": "latest"},
    "repository": {
        "comment_count": 0,
        "date_created": 1417494799,
        "description": "",
        "dockerfile": "#\n# BUILD\u0009\u0009docker build -t svendowideit/apt-cacher .\n",
        "full_description": "Docker Hub based automated build from a GitHub repo",
        "is_official": False,
        "is_private": True,
        "is_trusted": True,
        "name": "testhook",
        "namespace": "svendowideit",
        "owner": "svendowideit",
        "repo_name": "svendowideit/testhook",
        "repo_url": "https://registry.hub.docker.com/u/svendowideit/testhook/",
        "star_count": 0,
        "status": "Active",
    },
}


def payload(**changes: Any) -> dict[str, Any]:
    """DOCUMENTED with dotted-path changes; a value of ``...`` deletes the key."""
    body = copy.deepcopy(DOCUMENTED)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = body
        for key in parents:
            node = node[key]
        if value is ...:
            del node[last]
        else:
            node[last] = value
    return body


def test_documented_payload() -> None:
    push = parse_push(DOCUMENTED)
    assert push.repo == "svendowideit/testhook"
    assert push.push_data.tag == "latest"
    assert push.push_data.pusher == "trustedbuilder"
    assert push.push_data.pushed_at == datetime(2014, 12, 3, 0, 22, 41, tzinfo=UTC)
    assert push.push_data.images == ()
    assert push.callback_url == DOCUMENTED["callback_url"]


@pytest.mark.parametrize(
    ("pushed_at", "expected"),
    [
        (1417566161, datetime(2014, 12, 3, 0, 22, 41, tzinfo=UTC)),
        (1417566161.0, datetime(2014, 12, 3, 0, 22, 41, tzinfo=UTC)),
        (1417566161.25, datetime(2014, 12, 3, 0, 22, 41, 250000, tzinfo=UTC)),
        ("2014-12-03T00:22:41Z", datetime(2014, 12, 3, 0, 22, 41, tzinfo=UTC)),
        (None, None),
    ],
    ids=["int", "legacy-float", "fractional-float", "iso-string", "null"],
)
def test_pushed_at(pushed_at: Any, expected: datetime | None) -> None:
    assert parse_push(payload(push_data__pushed_at=pushed_at)).push_data.pushed_at == expected


def test_legacy_images_list() -> None:
    images = ["27d47432a69bca5f2700e4dff7de0388ed65f9d3fb1ec645e2bc24c223dc1cc3", "51a9c7c1f8bb2fa19bcd09789a34e63f"]
    push = parse_push(payload(push_data__images=images, push_data__pushed_at=1417566161.0))
    assert push.push_data.images == tuple(images)


def test_optional_fields_may_be_absent() -> None:
    push = parse_push({"push_data": {"tag": "1.2.3"}, "repository": {"repo_name": "acme/api"}})
    assert (push.repo, push.push_data.tag, push.push_data.pusher, push.push_data.pushed_at, push.callback_url) == (
        "acme/api",
        "1.2.3",
        None,
        None,
        None,
    )


def test_unknown_fields_are_tolerated() -> None:
    body = payload(push_data__media_type="image", push_data__new_thing={"x": [1, 2]}, future=True)
    body["repository"]["topics"] = ["a", "b"]
    push = parse_push(body)
    assert (push.repo, push.push_data.tag) == ("svendowideit/testhook", "latest")
    assert not hasattr(push.push_data, "new_thing")


@pytest.mark.parametrize(
    ("repository", "expected"),
    [
        ({"repo_name": "Acme/Simple-API"}, "acme/simple-api"),
        ({"namespace": "Acme", "name": "Simple-API"}, "acme/simple-api"),
        ({"repo_name": "", "namespace": "acme", "name": "web"}, "acme/web"),
        ({"repo_name": None, "namespace": "acme", "name": "web"}, "acme/web"),
        ({"repo_name": "acme/api", "namespace": "other", "name": "thing"}, "acme/api"),
    ],
    ids=["repo-name-lowercased", "namespace-name", "empty-repo-name", "null-repo-name", "repo-name-wins"],
)
def test_repo_name(repository: dict[str, Any], expected: str) -> None:
    assert parse_push({"push_data": {"tag": "1"}, "repository": repository}).repo == expected


REPO_REQUIRED = "repository.repo_name: is required (or repository.namespace and repository.name)"
CONTROL = "must not contain control or unpaired surrogate characters"
NOT_REPO = "not a Docker repository name (such as acme/api)"
TOO_LONG = "is too long (at most 255 characters)"
BAD: list[tuple[str, Any, str]] = [
    ("missing-tag", payload(push_data__tag=...), "push_data.tag: is required"),
    ("missing-push-data", payload(push_data=...), "push_data: is required"),
    ("missing-repository", payload(repository=...), "repository: is required"),
    (
        "repository-without-any-name",
        {"push_data": {"tag": "1"}, "repository": {"status": "Active"}},
        REPO_REQUIRED,
    ),
    ("namespace-without-name", {"push_data": {"tag": "1"}, "repository": {"namespace": "acme"}}, REPO_REQUIRED),
    ("tag-with-space", payload(push_data__tag="bad tag"), "push_data.tag: not a valid Docker tag"),
    ("tag-leading-dot", payload(push_data__tag=".hidden"), "push_data.tag: not a valid Docker tag"),
    ("tag-with-colon", payload(push_data__tag="a:b"), "push_data.tag: not a valid Docker tag"),
    ("tag-too-long", payload(push_data__tag="x" * 129), "push_data.tag: not a valid Docker tag"),
    ("tag-empty", payload(push_data__tag=""), "push_data.tag: not a valid Docker tag"),
    ("tag-not-a-string", payload(push_data__tag=5), "push_data.tag: must be a string"),
    ("push-data-not-an-object", payload(push_data="latest"), "push_data: must be a mapping (key: value)"),
    ("repository-not-an-object", payload(repository=["acme/api"]), "repository: must be a mapping (key: value)"),
    ("repo-name-nul", payload(repository__repo_name="acme/a\x00pi"), "repository.repo_name: " + CONTROL),
    ("repo-name-newline", payload(repository__repo_name="acme/api\nINFO forged"), "repository.repo_name: " + CONTROL),
    ("repo-name-surrogate", payload(repository__repo_name="x/\ud800"), "repository.repo_name: " + CONTROL),
    ("repo-name-grammar", payload(repository__repo_name="acme/-api"), "repository.repo_name: " + NOT_REPO),
    ("repo-name-space", payload(repository__repo_name="acme/my api"), "repository.repo_name: " + NOT_REPO),
    ("repo-name-too-long", payload(repository__repo_name="a/" + "b" * 254), "repository.repo_name: " + TOO_LONG),
    (
        "namespace-grammar",
        {"push_data": {"tag": "1"}, "repository": {"namespace": "a c", "name": "w"}},
        "repository.namespace: " + NOT_REPO,
    ),
    ("pusher-surrogate", payload(push_data__pusher="\udfff"), "push_data.pusher: " + CONTROL),
    (
        "pusher-huge",
        payload(push_data__pusher="p" * 1_000_000),
        "push_data.pusher: is too long (at most 255 characters)",
    ),
    ("callback-crlf", payload(callback_url="https://x/\r\nHost: y"), "callback_url: " + CONTROL),
    ("callback-not-http", payload(callback_url="file:///etc/passwd"), "callback_url: not an http(s) URL"),
    (
        "callback-url-too-long",
        payload(callback_url="https://x/" + "a" * 2048),
        "callback_url: is too long (at most 2048 characters)",
    ),
]


@pytest.mark.parametrize(("body", "message"), [(b, m) for _, b, m in BAD], ids=[i for i, _, _ in BAD])
def test_bad_payload(body: Any, message: str) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_push(body)
    assert exc.value.message == message
    assert exc.value.http_status == 400


def test_pushed_at_garbage() -> None:
    with pytest.raises(BadRequest) as exc:
        parse_push(payload(push_data__pushed_at="yesterday"))
    assert exc.value.message == (
        "push_data.pushed_at: must be a date and time (ISO 8601, such as 2024-05-01T12:00:00Z) or a Unix timestamp"
    )


def test_longest_valid_tag() -> None:
    assert parse_push(payload(push_data__tag="x" * 128)).push_data.tag == "x" * 128


@pytest.mark.parametrize("body", [[DOCUMENTED], "push", None, 42], ids=["list", "string", "null", "number"])
def test_body_must_be_an_object(body: Any) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_push(body)
    assert exc.value.message == "the body must be a JSON object (Docker Hub's push payload)"


@pytest.mark.parametrize("pushed_at", [10**20, float("inf"), -1e20], ids=["huge", "infinity", "huge-negative"])
def test_out_of_range_pushed_at_is_a_bad_request(pushed_at: Any) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_push(payload(push_data__pushed_at=pushed_at))
    assert exc.value.message.startswith("push_data.pushed_at: ")
