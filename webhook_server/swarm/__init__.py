"""The Docker adapter: the only package that imports ``docker``."""

from webhook_server.swarm.services import ServiceState, SwarmServices

__all__ = ["ServiceState", "SwarmServices"]
