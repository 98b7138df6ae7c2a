"""critic-free-rl: RL for LLM math reasoning with PPO and critic-free estimators under shaped PRM rewards."""
__version__ = "0.1.0"
