"""LLM providers behind one port: Claude through the SDK, the offline provider, the call recorder, the fallback step."""
