"""The live driver: real load, a real Prometheus, real Kubernetes, and a local emulated cluster."""
