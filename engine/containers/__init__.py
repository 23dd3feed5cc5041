"""Containers: Docker container records and how they become running OCI bundles.

Pure spec building lives in ``spec`` (with its helpers ``caps``, ``userlookup``, ``devices``,
``specmounts``, ``resources`` and ``security``); the service and lifecycle modules sit beside it.
"""
