"""worldloom.pretrain"""
