"""The Docker adapter: the only package that imports ``docker``."""

from webhook_server.swarm.services import SwarmServices

__all__ = ["SwarmServices"]
