"""The `afina` command and afina on one machine: the local servers, the supervised services, the demo.

Nothing here is deployed on its own; the deployable services are under `services/`.
"""
