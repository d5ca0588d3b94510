"""Tests of the distributed brokers (asyncpool.jetstream) against real servers."""
