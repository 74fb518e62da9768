from treevu.cli import main

main()
