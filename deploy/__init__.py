"""Deployment tooling: the Helm chart's generated data (``python -m deploy.generate``) and the vendored schemas the
chart and docker-compose.yml are validated against (deploy/schemas/)."""
