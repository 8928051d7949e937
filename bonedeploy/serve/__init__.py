"""``bonedeploy serve``: an artefact behind NVIDIA Triton (the bundled ``tritonserver`` running
generated Python-backend models), and the pieces the remote client shares with it."""
