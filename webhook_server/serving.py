"""``webhook-server serve`` once its checks have passed: gevent patches the standard library first, then the
CLI runs again in this process and starts gunicorn (see ``server.exec_patched``)."""

from gevent import monkey

monkey.patch_all()

from webhook_server.cli import main  # noqa: E402  (after the patch, by design)

main()
