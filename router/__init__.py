"""Routing of LLM requests across deployments: retries, fallbacks, cooldowns."""
