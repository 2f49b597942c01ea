"""Sources: watchers that find inbound units and land them. One module per kind."""
