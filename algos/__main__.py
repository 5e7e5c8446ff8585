from algos.cli import main

main()
