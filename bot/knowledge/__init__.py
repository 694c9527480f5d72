"""The knowledge base: the team's docs indexed in the bot's database, searched to ground answers."""
