from bonedeploy.cli.app import main

main()
