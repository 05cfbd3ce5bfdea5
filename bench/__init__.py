"""The benchmark of issue 13: this project side by side with the Swarm floor, a bare Flask app and the
webhook-binary setup it replaces. Run it with ``bench/run`` (see bench/README.md)."""
