"""Stages: each a thin composition of the data layer, the LLM layer and Ray."""
