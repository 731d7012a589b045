"""Kubernetes side of the prod stack: the JuiceFS CSI volume and the NativeLink tier."""
