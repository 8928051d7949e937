"""artefacts"""
