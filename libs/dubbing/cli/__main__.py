from dubbing.cli import main

main()
