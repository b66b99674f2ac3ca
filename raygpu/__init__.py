"""raygpu: the operator's side of the toolkit (config, manifests, plan, CLI)."""
