from karma.cli.main import main

main()
