"""bench/render"""
