"""
The core: values, errors and seams; the write rules, group commit and the
stream store; users, ACLs and metadata.
"""
