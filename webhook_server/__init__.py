"""Docker Hub webhook receiver that rolls Docker Swarm services forward."""

__version__ = "0.1.0"
