"""Sources: describe a data store, plan its export as tasks, and run one task."""
