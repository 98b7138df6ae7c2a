"""``python -m critic_free_rl.cli <command> ...`` (what ``critic-free-rl`` runs)."""
from critic_free_rl.cli import main

if __name__ == "__main__":  # reward worker processes re-import this module as __mp_main__
    main()
