from phonelabel.cli import main

main()
