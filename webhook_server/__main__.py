from webhook_server.cli import main

main()
