from lifelora.cli import main

main()
