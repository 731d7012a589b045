"""JuiceFS: the command lines, URLs and scripts this deployment hands to the `juicefs` client."""
