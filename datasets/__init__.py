"""worldloom.datasets"""
