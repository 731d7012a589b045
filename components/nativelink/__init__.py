"""NativeLink: the typed config it reads, the configs this deployment renders, and the layout rules."""
