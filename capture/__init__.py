"""worldloom.capture"""
