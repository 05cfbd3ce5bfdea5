"""nginx in front of the receiver and the swarm's web services: its config section, template and reload.

Nothing here imports ``docker``: talking to the swarm goes through ``webhook_server.swarm``.
"""
