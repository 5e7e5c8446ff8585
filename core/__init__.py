"""The neutral layer that both `envs/` and `algos/` import, and that imports neither (DESIGN.md section 10):
errors and settings checks, the agent contract, the env-to-rollout info protocol and safe file I/O."""
