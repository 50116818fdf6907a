"""What the LLM stage is given and gives back: conversation memory (``history``), the chat template
(``prompt``) and reasoning models' think blocks (``reasoning``). See ``docs/architecture.md``."""
