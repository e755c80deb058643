from synthrelease_cli.main import main

main()
