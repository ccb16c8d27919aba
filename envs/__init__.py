"""worldloom.envs"""
