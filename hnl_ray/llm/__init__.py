"""LLM layer: engines that map a Ray Dataset of prompts to answers, prompt templates, output schemas, parsing."""
