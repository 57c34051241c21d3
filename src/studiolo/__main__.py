from studiolo.cli import main

main()
