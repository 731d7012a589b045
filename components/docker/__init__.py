"""Docker (dev) implementations of the components: everything on the local Docker engine."""
