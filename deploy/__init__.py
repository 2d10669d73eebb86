"""Deployment: the Envoy template and its renderer, the local supervisor (`make run` / `make demo`),
container helpers, Dockerfiles, docker compose and Kubernetes manifests."""
