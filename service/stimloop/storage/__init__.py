"""Durable state: the store of sets and sessions, the activation cache, stimulus folders."""
