"""Commands answered without the LLM: matching (hassil), handlers, timers.

    matcher.py     transcript -> ``Match`` (intent, slots), over Home Assistant's sentences
                   (``home_assistant_intents``) and the user's sentence files
    responses.py   what a command says back: the package's answers, the time and date in words
    handlers.py    ``Match`` -> ``Answer`` (words, and effects that wait for the turn's commit)
    timers.py      running timers (pure: ``now`` is passed in) and their file
    alarms.py      the task that rings finished timers, until "stop" or ``intents.alarm_limit_s``

The stage that runs them sits between ASR and the LLM (``stages/intents.py``). See
``docs/architecture.md`` and README "Commands and home control".
"""
