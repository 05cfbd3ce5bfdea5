"""Image references: ``[registry/]name[:tag][@digest]`` split and joined."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageRef:
    name: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, ref: str) -> ImageRef:
        name, _, digest = ref.partition("@")
        tag = None
        slash = name.rfind("/")
        colon = name.rfind(":")
        # A colon after the last slash separates the tag; one before it belongs to a registry port.
        if colon > slash:
            name, tag = name[:colon], name[colon + 1 :]
        return cls(name=name, tag=tag, digest=digest or None)

    @property
    def canonical_name(self) -> str:
        """The name as Docker resolves it: ``acme/api`` and ``docker.io/acme/api`` are one repository."""
        name = self.name
        for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
            name = name.removeprefix(prefix)
        return name.removeprefix("library/")

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
