from kmemtrace.cli import main

main()
