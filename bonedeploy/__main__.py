from bonedeploy.cli import main

main()
