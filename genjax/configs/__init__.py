"""ml-collections experiment configs: each file has `get_config(preset)`."""
