"""worldloom.idm"""
